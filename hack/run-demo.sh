#!/usr/bin/env bash
# `make run`: the operator on the local Kubernetes simulator. Starts the
# simulator, installs the operator with the real Helm, applies
# examples/basic.yaml with the real kubectl, waits until the cluster is
# Available, writes and reads through the client Service, then keeps
# everything running until Ctrl-C and stops every process it started.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}"
BIN="${ROOT}/target/debug"
STATE="${ROOT}/k8s-sim-state"
export KUBECONFIG="${ROOT}/kubeconfig"
HELM="${ROOT}/tools/bin/helm"
KUBECTL="${ROOT}/tools/bin/kubectl"
LISTEN="${KEYRAFT_SIM_LISTEN:-127.0.0.1:6443}"

rm -rf "${STATE}"
"${BIN}/keyraft-k8s-sim" serve --listen "${LISTEN}" --kubeconfig-out "${KUBECONFIG}" --state-dir "${STATE}" >"${ROOT}/k8s-sim.log" 2>&1 &
SIM=$!
stop() {
  echo "stopping the simulator and every pod it runs"
  kill -TERM "${SIM}" 2>/dev/null || true
  wait "${SIM}" 2>/dev/null || true
}
trap stop EXIT
trap 'exit 0' INT TERM
for _ in $(seq 1 100); do
  grep -q "keyraft-k8s-sim ready" "${ROOT}/k8s-sim.log" && break
  kill -0 "${SIM}" 2>/dev/null || { cat "${ROOT}/k8s-sim.log"; exit 1; }
  sleep 0.2
done
grep -q "keyraft-k8s-sim ready" "${ROOT}/k8s-sim.log" || { echo "simulator did not start"; cat "${ROOT}/k8s-sim.log"; exit 1; }

echo "== helm install keyraft-operator"
"${HELM}" install keyraft-operator charts/keyraft-operator --namespace keyraft-system --create-namespace --wait --timeout 3m
echo "== kubectl apply -f examples/basic.yaml"
"${KUBECTL}" apply --server-side -f examples/basic.yaml
"${KUBECTL}" wait --for=condition=Available keyraftcluster/basic --timeout=300s
"${KUBECTL}" get kr basic

EP="basic.default.svc:7000"
# TLS is on: the client certificate the operator issued, from its Secret
# (the README's kubectl recipe).
CREDS="${ROOT}/keyraft-credentials"
mkdir -p "${CREDS}"
chmod 700 "${CREDS}"
for k in ca.crt tls.crt tls.key; do
  "${KUBECTL}" get secret basic-client-tls -o jsonpath="{.data.${k//./\\.}}" | base64 -d >"${CREDS}/${k}"
done
chmod 600 "${CREDS}/tls.key"
export KEYRAFT_CA="${CREDS}/ca.crt" KEYRAFT_CERT="${CREDS}/tls.crt" KEYRAFT_KEY="${CREDS}/tls.key"
echo "== data through the client Service ${EP} (mutual TLS, certificate from Secret basic-client-tls)"
K="${ROOT}/target/debug/keyraft"
"${K}" --endpoints "${EP}" put greeting "hello from keyraft on kubernetes"
echo "get greeting -> $("${K}" --endpoints "${EP}" get greeting --consistency linearizable)"

cat <<MSG

Keyraft is running under the operator on the local Kubernetes simulator.
  export KUBECONFIG=${KUBECONFIG}
  export KEYRAFT_CA=${KEYRAFT_CA#"${ROOT}"/} KEYRAFT_CERT=${KEYRAFT_CERT#"${ROOT}"/} KEYRAFT_KEY=${KEYRAFT_KEY#"${ROOT}"/}
  ${KUBECTL#"${ROOT}"/} get kr,sts,pods,pvc
  ${KUBECTL#"${ROOT}"/} describe kr basic
  ${KUBECTL#"${ROOT}"/} scale kr/basic --replicas=5
  target/debug/keyraft --endpoints ${EP} status
  target/debug/keyraft --endpoints ${EP} put KEY VALUE
Simulator log: k8s-sim.log. Press Ctrl-C to stop everything.
MSG
while kill -0 "${SIM}" 2>/dev/null; do sleep 1; done
