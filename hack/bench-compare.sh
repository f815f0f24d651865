#!/usr/bin/env bash
# Keyraft and etcd side by side on this machine: installs etcd from Debian's
# packages if it is missing, builds the release binaries, then keyraft-bench
# starts 3 etcd members, runs the rows, stops them, and does the same with 3
# Keyraft nodes (16 partitions, replication factor 3). Prints one Markdown
# table. Ratios are comparable within one run only.
#   BENCH_SECONDS=10 (per row)  BENCH_WARMUP=2  BENCH_ROWS=w1,w16,w64,w256,lin64,ses64
#   BENCH_SYSTEMS=etcd,keyraft  ETCD_BIN=etcd  BENCH_KEYRAFT_PLAINTEXT=1 (Keyraft without TLS)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CARGO="${CARGO:-cargo}"

if [[ -z "${ETCD_BIN:-}" ]] && ! command -v etcd >/dev/null; then
  echo "etcd not found: installing Debian's etcd-server"
  SUDO=""
  [[ "$(id -u)" == 0 ]] || SUDO="sudo"
  ${SUDO} apt-get update -qq
  DEBIAN_FRONTEND=noninteractive ${SUDO} apt-get install -y -qq etcd-server >/dev/null
  # The package enables a system service; the benchmark starts its own members.
  if command -v systemctl >/dev/null && systemctl is-active --quiet etcd 2>/dev/null; then
    ${SUDO} systemctl stop etcd
  fi
fi

"${CARGO}" build --release -p keyraft-node -p keyraft-bench
# keyraft-bench stops every member and removes its directories when it ends,
# also on Ctrl-C or SIGTERM.
exec "${ROOT}/target/release/keyraft-bench" --node-bin "${ROOT}/target/release/keyraft-node" "$@"
