#!/usr/bin/env bash
# Lints and renders the Helm chart with the pinned Helm, then checks the
# rendered manifests (typed parse, exact RBAC, CRD copy) with the Rust test
# operator/tests/chart.rs (which also renders each monitoring flag), checks
# the chart README is generated from values.yaml, then runs the monitoring
# checks (promtool, a real Prometheus scraping a local cluster:
# hack/monitoring-check.sh). Run hack/fetch-k8s-tools.sh first.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HELM="${KEYRAFT_HELM:-${ROOT}/tools/bin/helm}"
CHART="${ROOT}/charts/keyraft-operator"
cd "${ROOT}"

[[ -x "${HELM}" ]] || { echo "no Helm at ${HELM}: run hack/fetch-k8s-tools.sh" >&2; exit 1; }

"${HELM}" lint --strict "${CHART}"
for values in "${CHART}"/ci/*.yaml; do
  "${HELM}" lint --strict "${CHART}" -f "${values}" >/dev/null
  "${HELM}" template kr "${CHART}" --namespace keyraft-system --include-crds -f "${values}" >/dev/null
  echo "rendered with ${values#"${ROOT}"/}"
done

KEYRAFT_HELM="${HELM}" cargo test -q -p keyraft-operator --test chart --test crd
python3 hack/chart-readme.py --check
# The node build of `make chaos-short` and `make e2e` (failpoints stay off)
# and the CLI of `make integration`, each built alone as there.
cargo build -q -p keyraft-node --features failpoints
cargo build -q -p keyraft-client --bin keyraft
hack/monitoring-check.sh
