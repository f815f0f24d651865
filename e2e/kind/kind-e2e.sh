#!/usr/bin/env bash
# Runs the e2e scenarios inside the kind cluster made by e2e/kind/kind-up.sh
# (make kind-e2e runs kind-up first): applies e2e/kind/e2e-job.yaml with the
# e2e image of this build, streams the Job's log, and exits 0 when the Job
# completed, 1 when it failed (printing the cluster's Keyraft objects and the
# operator's log).
#
# Environment:
#   KEYRAFT_VERSION      tag of the keyraft/keyraft-e2e image (default as in kind-up.sh)
#   KEYRAFT_E2E_TIMEOUT  seconds to wait for the Job after it started (default 5700:
#                        the Job's activeDeadlineSeconds of 5400 plus a margin)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "${ROOT}"

KUBECONFIG_FILE="${ROOT}/e2e/kind/kubeconfig"
NS=keyraft-e2e
JOB=keyraft-e2e
OPERATOR_NS=keyraft-system
OPERATOR_DEPLOYMENT=op-keyraft-operator
TIMEOUT="${KEYRAFT_E2E_TIMEOUT:-5700}"

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

# Wait for the pod to leave Pending, failing fast when its image is not there.
echo "waiting for the ${JOB} pod to start (image keyraft/keyraft-e2e:${VERSION})"
selector="batch.kubernetes.io/job-name=${JOB}"
deadline=$((SECONDS + 300))
while :; do
  phase="$(kubectl -n "${NS}" get pods -l "${selector}" -o jsonpath='{.items[0].status.phase}' 2>/dev/null || true)"
  waiting="$(kubectl -n "${NS}" get pods -l "${selector}" \
    -o jsonpath='{.items[0].status.containerStatuses[0].state.waiting.reason}' 2>/dev/null || true)"
  case "${phase}" in
    Running | Succeeded | Failed) break ;;
  esac
  case "${waiting}" in
    ErrImagePull | ImagePullBackOff | ErrImageNeverPull | InvalidImageName | CreateContainerConfigError | CreateContainerError)
      kubectl -n "${NS}" describe pods -l "${selector}" >&2 || true
      die "the ${JOB} pod cannot start (${waiting}): was keyraft/keyraft-e2e:${VERSION} built and loaded by 'make kind-up'?"
      ;;
  esac
  ((SECONDS < deadline)) || {
    kubectl -n "${NS}" describe pods -l "${selector}" >&2 || true
    die "the ${JOB} pod did not start within 300 s"
  }
  sleep 2
done

# The log as it is written; the stream may end early (API server hiccup), so
# the Job's conditions, not the log, decide the result.
kubectl -n "${NS}" logs -f "job/${JOB}" || echo "kind-e2e: the log stream ended; waiting for the Job" >&2

deadline=$((SECONDS + TIMEOUT))
result=""
while [[ -z "${result}" ]]; do
  conditions=" $(kubectl -n "${NS}" get job "${JOB}" \
    -o jsonpath='{range .status.conditions[?(@.status=="True")]}{.type}{" "}{end}' || true) "
  case "${conditions}" in
    *" Complete "*) result=passed ;;
    *" Failed "*) result=failed ;;
    *)
      ((SECONDS < deadline)) || die "the Job ${NS}/${JOB} neither completed nor failed within ${TIMEOUT} s"
      sleep 5
      ;;
  esac
done

if [[ "${result}" == passed ]]; then
  echo "kind-e2e: the e2e scenarios passed"
  exit 0
fi

echo "kind-e2e: the e2e scenarios failed; state of the cluster:" >&2
kubectl get keyraftclusters -A >&2 || true
kubectl get statefulsets,pods,pvc -A -o wide -l app.kubernetes.io/name=keyraft >&2 || true
kubectl -n "${OPERATOR_NS}" logs -l app.kubernetes.io/instance=op --prefix --tail=200 >&2 || true
kubectl -n "${NS}" get job "${JOB}" -o jsonpath='{range .status.conditions[*]}{.type}={.status} {.reason}: {.message}{"\n"}{end}' >&2 || true
exit 1
