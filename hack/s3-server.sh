#!/usr/bin/env bash
# An S3-compatible server on loopback for the backup tests: moto's standalone
# server (PyPI `moto[server]`), installed with pip when missing.
#
#   hack/s3-server.sh --install          install it if missing, then exit
#   hack/s3-server.sh PORT [BUCKET...]   serve on 127.0.0.1:PORT in the
#                                        foreground (creates the buckets once
#                                        it answers); stop it with SIGTERM
#
# moto keeps everything in memory and accepts any credentials.
set -euo pipefail

install() {
  if python3 -c 'import moto.server, flask, flask_cors' 2>/dev/null; then
    return 0
  fi
  command -v python3 >/dev/null || { echo "s3-server: python3 is missing" >&2; exit 1; }
  if ! python3 -m pip --version >/dev/null 2>&1; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip >/dev/null
    else
      echo "s3-server: pip is missing (install python3-pip)" >&2
      exit 1
    fi
  fi
  # Debian's system Python refuses pip installs without this flag (PEP 668).
  python3 -m pip install -q 'moto[server]>=5,<6' 2>/dev/null ||
    python3 -m pip install -q --break-system-packages 'moto[server]>=5,<6'
  python3 -c 'import moto.server' || { echo "s3-server: moto did not install" >&2; exit 1; }
}

case "${1:-}" in
  --install)
    install
    exit 0
    ;;
  '' | -h | --help)
    sed -n '2,11p' "$0"
    exit 2
    ;;
esac

port=$1
shift
install
if (($#)); then
  (
    for _ in $(seq 1 100); do
      if python3 - "$port" "$@" <<'PY' 2>/dev/null; then exit 0; fi
import sys, urllib.request
port = sys.argv[1]
for b in sys.argv[2:]:
    urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/{b}", method="PUT"), timeout=2)
PY
      sleep 0.2
    done
    echo "s3-server: could not create buckets $*" >&2
  ) &
fi
exec python3 -m moto.server -H 127.0.0.1 -p "$port"
