#!/usr/bin/env bash
# Measures a 3 -> 5 node scale-out of a local release-build cluster: loads
# data, starts a read/write benchmark, adds two nodes, rebalances, and
# reports how long until every partition sits where the plan put it and how
# many client requests were retried meanwhile.
#   KEYRAFT_MEASURE_PARTITIONS (16), KEYRAFT_MEASURE_VALUE (1024 bytes),
#   KEYRAFT_MEASURE_KEYS (100000): 100,000 x 1 KiB = about 100 MB.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${ROOT}/target/release"
DIR="$(mktemp -d "${TMPDIR:-/tmp}/keyraft-scale.XXXXXX")"
PORT="${KEYRAFT_MEASURE_PORT:-7700}"
PARTS="${KEYRAFT_MEASURE_PARTITIONS:-16}"
VALUE="${KEYRAFT_MEASURE_VALUE:-1024}"
KEYS="${KEYRAFT_MEASURE_KEYS:-100000}"
export KEYRAFT_ENDPOINTS="127.0.0.1:${PORT},127.0.0.1:$((PORT + 1)),127.0.0.1:$((PORT + 2))"
K="${BIN}/keyraft"
pids=()
cleanup() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "${DIR}"; }
trap cleanup EXIT

# shellcheck source=hack/local-cluster.sh
source "${ROOT}/hack/local-cluster.sh"
start_local_cluster "${DIR}" "${PORT}" "${PARTS}" || { pids+=("${LOCAL_UP_PID}"); exit 1; }
pids+=("${LOCAL_UP_PID}")

echo "== loading ${KEYS} keys of ${VALUE} bytes"
"$K" load --keys "${KEYS}" --value-size "${VALUE}" --clients 32
"$K" status -o json | python3 -c 'import json, sys; print("keys stored:", sum(p["keys"] for p in json.load(sys.stdin)["partition_status"]))'

echo "== scale-out under load"
"$K" bench --clients 8 --duration 600 --value-size "${VALUE}" --read-ratio 0.5 --keys "${KEYS}" >"${DIR}/bench.log" 2>&1 &
bench=$!
"$K" local add-node --index 3 --data-dir "${DIR}" --base-port "${PORT}" >"${DIR}/add3.log" 2>&1 &
pids+=($!)
"$K" local add-node --index 4 --data-dir "${DIR}" --base-port "${PORT}" >"${DIR}/add4.log" 2>&1 &
pids+=($!)
new_nodes_ready() {
  "$K" status -o json | python3 -c '
import json, sys
nodes = json.load(sys.stdin)["nodes"]
sys.exit(0 if sum(n["name"] in ("node-3", "node-4") and n["state"] == "active" and n["ready"] is True for n in nodes) == 2 else 1)'
}
for _ in $(seq 1 120); do new_nodes_ready && break; sleep 0.5; done
start=$(date +%s.%N)
"$K" admin rebalance --max-moves "${PARTS}"
while [ "$("$K" placement -o json | python3 -c 'import json, sys; print(json.load(sys.stdin)["moving"])')" != 0 ]; do sleep 0.5; done
end=$(date +%s.%N)
echo "rebalance converged in $(echo "${end} - ${start}" | bc) s"
"$K" status | sed -n '/NODES/,/PARTITIONS/p'
kill -INT "${bench}" 2>/dev/null || true
wait "${bench}" 2>/dev/null || true
cat "${DIR}/bench.log"
