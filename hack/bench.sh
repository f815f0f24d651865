#!/usr/bin/env bash
# Starts a local 3-node cluster (release build, fsync on) and runs
# `keyraft bench` with 1, 16 and 64 clients against it, printing each node's
# resident memory after every row. Figures are only comparable within one
# run on one machine.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${ROOT}/target/release"
DIR="$(mktemp -d "${TMPDIR:-/tmp}/keyraft-bench.XXXXXX")"
PORT="${KEYRAFT_BENCH_PORT:-7600}"
DURATION="${KEYRAFT_BENCH_SECONDS:-10}"
EPS="127.0.0.1:${PORT},127.0.0.1:$((PORT + 1)),127.0.0.1:$((PORT + 2))"

# shellcheck source=hack/local-cluster.sh
source "${ROOT}/hack/local-cluster.sh"
trap 'kill -TERM ${LOCAL_UP_PID:-0} 2>/dev/null; wait 2>/dev/null; rm -rf "${DIR}"' EXIT
start_local_cluster "${DIR}" "${PORT}" 8

# Resident memory of each node: now and its peak so far (VmRSS, VmHWM).
node_memory() {
  local pid line=""
  for pid in $(pgrep -f "keyraft-node.*${DIR}" || true); do
    line+="$(awk '/^VmRSS/ {r=$2} /^VmHWM/ {h=$2} END {printf "%d MiB (peak %d MiB)", r/1024, h/1024}' "/proc/${pid}/status") "
  done
  echo "   node memory: ${line:-no node found}"
}

for clients in 1 16 64; do
  for ratio in 0.0 0.9; do
    echo "== ${clients} clients, read ratio ${ratio}"
    "${BIN}/keyraft" --endpoints "${EPS}" bench --clients "${clients}" --duration "${DURATION}" \
      --value-size 256 --read-ratio "${ratio}" --consistency linearizable
    node_memory
  done
done
