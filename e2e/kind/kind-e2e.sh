#!/usr/bin/env bash
# Runs the e2e tests inside the kind cluster made by e2e/kind/kind-up.sh
# (make kind-e2e runs kind-up first): applies e2e/kind/e2e-job.yaml with the
# e2e image of this build, streams the log of its initContainer `scenarios`
# (e2e/tests/scenarios.rs), then of its container `day2` (e2e/tests/day2.rs),
# and exits 0 when the Job completed (both passed), 1 when it failed (either
# failed; printing the containers' states, the cluster's Keyraft objects and
# the operator's log).
#
# Environment:
#   KEYRAFT_VERSION      tag of the keyraft/keyraft-e2e image (default as in kind-up.sh)
#   KEYRAFT_E2E_TIMEOUT  seconds to wait for the Job after its pod started (default 7500:
#                        the Job's activeDeadlineSeconds of 7200 plus a margin)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "${ROOT}"

KUBECONFIG_FILE="${ROOT}/e2e/kind/kubeconfig"
NS=keyraft-e2e
JOB=keyraft-e2e
OPERATOR_NS=keyraft-system
OPERATOR_DEPLOYMENT=op-keyraft-operator
TIMEOUT="${KEYRAFT_E2E_TIMEOUT:-7500}"

die() {
  echo "kind-e2e: $*" >&2
  exit 1
}

[[ -f "${KUBECONFIG_FILE}" ]] || die "no e2e/kind/kubeconfig: run 'make kind-up' first"
export KUBECONFIG="${KUBECONFIG_FILE}"

if [[ -x "${ROOT}/tools/bin/kubectl" ]]; then
  KUBECTL="${ROOT}/tools/bin/kubectl"
else
  KUBECTL="$(command -v kubectl)" || die "kubectl not found: run 'make tools' or put kubectl on PATH"
fi
kubectl() { "${KUBECTL}" "$@"; }

VERSION="${KEYRAFT_VERSION:-$(sed -n 's/^pub const DEFAULT_VERSION: &str = "\(.*\)";$/\1/p' operator/src/crd.rs)}"
[[ -n "${VERSION}" ]] || die "no KEYRAFT_VERSION and no DEFAULT_VERSION found in operator/src/crd.rs"

kubectl -n "${OPERATOR_NS}" get "deployment/${OPERATOR_DEPLOYMENT}" >/dev/null ||
  die "no operator in ${OPERATOR_NS}: run 'make kind-up' first"

# A Job's pod template is immutable, and a finished Job never runs again:
# every run starts from a new one.
kubectl -n "${NS}" delete job "${JOB}" --ignore-not-found --cascade=foreground --wait=true --timeout=120s
# Namespaces an earlier run left behind (a scenario that failed midway), so
# names derived from the same process id do not collide.
kubectl delete namespace -l keyraft.io/e2e=scenario --ignore-not-found --wait=true --timeout=600s

sed -e "s|image: keyraft/keyraft-e2e:.*|image: keyraft/keyraft-e2e:${VERSION}|" e2e/kind/e2e-job.yaml |
  kubectl apply -f -

selector="batch.kubernetes.io/job-name=${JOB}"

# State of container $2 of the Job's pod (there is one: backoffLimit 0), from
# its status list $1 (initContainerStatuses or containerStatuses): "running",
# "exited CODE", "waiting REASON", or empty while there is no pod or no status.
container_state() {
  local f=".items[0].status.$1[?(@.name==\"$2\")].state" out running code reason
  out="$(kubectl -n "${NS}" get pods -l "${selector}" \
    -o jsonpath="{${f}.running.startedAt}|{${f}.terminated.exitCode}|{${f}.waiting.reason}" 2>/dev/null || true)"
  IFS='|' read -r running code reason <<<"${out}"
  if [[ -n "${code}" ]]; then
    echo "exited ${code}"
  elif [[ -n "${running}" ]]; then
    echo running
  elif [[ -n "${reason}" ]]; then
    echo "waiting ${reason}"
  fi
}

pod_phase() {
  kubectl -n "${NS}" get pods -l "${selector}" -o jsonpath='{.items[0].status.phase}' 2>/dev/null || true
}

# "passed" once the Job completed, "failed" once it failed, else empty.
job_result() {
  local conditions
  conditions=" $(kubectl -n "${NS}" get job "${JOB}" \
    -o jsonpath='{range .status.conditions[?(@.status=="True")]}{.type}{" "}{end}' || true) "
  case "${conditions}" in
    *" Complete "*) echo passed ;;
    *" Failed "*) echo failed ;;
  esac
}

# Dies when a container state says it can never start (its image is not there).
die_if_cannot_start() {
  case "$1" in
    "waiting ErrImagePull" | "waiting ImagePullBackOff" | "waiting ErrImageNeverPull" | "waiting InvalidImageName" | \
      "waiting CreateContainerConfigError" | "waiting CreateContainerError")
      kubectl -n "${NS}" describe pods -l "${selector}" >&2 || true
      die "the ${JOB} pod cannot start (${1#waiting }): was keyraft/keyraft-e2e:${VERSION} built and loaded by 'make kind-up'?"
      ;;
  esac
}

# Follows a container's log as it is written; the stream may end early (API
# server hiccup), so the Job's conditions, not the log, decide the result.
stream() {
  echo "kind-e2e: --- log of $1 (e2e/tests/$1.rs) ---"
  kubectl -n "${NS}" logs -f "job/${JOB}" -c "$1" || echo "kind-e2e: the log stream of $1 ended" >&2
}

# Wait for the initContainer `scenarios` to start (the pod stays Pending while
# it runs), failing fast when its image is not there.
echo "waiting for the ${JOB} pod to start (image keyraft/keyraft-e2e:${VERSION})"
start_deadline=$((SECONDS + 300))
while :; do
  state="$(container_state initContainerStatuses scenarios)"
  case "${state}" in
    running | exited*) break ;;
  esac
  die_if_cannot_start "${state}"
  case "$(pod_phase)" in
    Succeeded | Failed) break ;;
  esac
  [[ -z "$(job_result)" ]] || break
  ((SECONDS < start_deadline)) || {
    kubectl -n "${NS}" describe pods -l "${selector}" >&2 || true
    die "the ${JOB} pod did not start within 300 s"
  }
  sleep 2
done

deadline=$((SECONDS + TIMEOUT))
stream scenarios

# The container `day2` starts once `scenarios` exited 0 (the stream above may
# have ended before that); it never starts when `scenarios` failed.
while :; do
  state="$(container_state containerStatuses day2)"
  case "${state}" in
    running | exited*)
      stream day2
      break
      ;;
  esac
  die_if_cannot_start "${state}"
  init="$(container_state initContainerStatuses scenarios)"
  if [[ "${init}" == "exited "* && "${init}" != "exited 0" ]]; then
    echo "kind-e2e: scenarios failed (${init}); day2 does not run" >&2
    break
  fi
  case "$(pod_phase)" in
    Succeeded | Failed) break ;;
  esac
  [[ -z "$(job_result)" ]] || break
  ((SECONDS < deadline)) || break # the loop below reports the timeout
  sleep 5
done

result=""
while [[ -z "${result}" ]]; do
  result="$(job_result)"
  if [[ -z "${result}" ]]; then
    ((SECONDS < deadline)) || die "the Job ${NS}/${JOB} neither completed nor failed within ${TIMEOUT} s"
    sleep 5
  fi
done

if [[ "${result}" == passed ]]; then
  echo "kind-e2e: the e2e scenarios and day2 tests passed"
  exit 0
fi

echo "kind-e2e: the e2e tests failed; state of the cluster:" >&2
kubectl -n "${NS}" get pods -l "${selector}" -o jsonpath='{range .items[*]}{range .status.initContainerStatuses[*]}{"initContainer "}{.name}{": "}{.state}{"\n"}{end}{range .status.containerStatuses[*]}{"container "}{.name}{": "}{.state}{"\n"}{end}{end}' >&2 || true
kubectl get keyraftclusters -A >&2 || true
kubectl get statefulsets,pods,pvc -A -o wide -l app.kubernetes.io/name=keyraft >&2 || true
kubectl -n "${OPERATOR_NS}" logs -l app.kubernetes.io/instance=op --prefix --tail=200 >&2 || true
kubectl -n "${NS}" get job "${JOB}" -o jsonpath='{range .status.conditions[*]}{.type}={.status} {.reason}: {.message}{"\n"}{end}' >&2 || true
exit 1
