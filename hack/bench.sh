#!/usr/bin/env bash
# Starts a local 3-node cluster (release build, fsync on) and runs
# `keyraft bench` with 1, 16 and 64 clients against it. Figures are only
# comparable within one run on one machine.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${ROOT}/target/release"
DIR="$(mktemp -d "${TMPDIR:-/tmp}/keyraft-bench.XXXXXX")"
PORT="${KEYRAFT_BENCH_PORT:-7600}"
DURATION="${KEYRAFT_BENCH_SECONDS:-10}"
EPS="127.0.0.1:${PORT},127.0.0.1:$((PORT + 1)),127.0.0.1:$((PORT + 2))"

"${BIN}/keyraft" local up --nodes 3 --partitions 8 --replication-factor 3 --data-dir "${DIR}" --base-port "${PORT}" >"${DIR}/up.log" 2>&1 &
UP=$!
trap 'kill -TERM ${UP} 2>/dev/null; wait ${UP} 2>/dev/null; rm -rf "${DIR}"' EXIT
for _ in $(seq 1 120); do
  grep -q "ready at" "${DIR}/up.log" && break
  kill -0 ${UP} 2>/dev/null || { cat "${DIR}/up.log"; exit 1; }
  sleep 0.5
done
grep -q "ready at" "${DIR}/up.log" || { echo "cluster did not become ready"; cat "${DIR}/up.log"; exit 1; }

for clients in 1 16 64; do
  for ratio in 0.0 0.9; do
    echo "== ${clients} clients, read ratio ${ratio}"
    "${BIN}/keyraft" --endpoints "${EPS}" bench --clients "${clients}" --duration "${DURATION}" \
      --value-size 256 --read-ratio "${ratio}" --consistency linearizable
  done
done
