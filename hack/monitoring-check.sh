#!/usr/bin/env bash
# Real checks of the monitoring artefacts the chart ships:
#  1. promtool check rules + promtool test rules (quorum loss, leaderless
#     partition, node not ready) on charts/keyraft-operator/files/keyraft-alerts.yaml;
#  2. the Grafana dashboard is valid JSON with panels;
#  3. a `keyraft local up` cluster is scraped by a real Prometheus server
#     (Debian's package); a query returns exactly one leader per Raft group,
#     and every keyraft_* metric the dashboard and the rules name (the
#     operator's aside: operator/tests/chart.rs checks those against its
#     registry) is among the series Prometheus ingested.
# Installs Debian's `prometheus` package with apt-get when promtool or
# prometheus is missing and this runs as root (as on CI); otherwise fails
# saying what to install. Needs target/debug/keyraft and keyraft-node
# (cargo build -p keyraft-node -p keyraft-client; hack/chart-check.sh does).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}"
RULES=charts/keyraft-operator/files/keyraft-alerts.yaml
DASHBOARD=charts/keyraft-operator/files/dashboards/keyraft.json
KEYRAFT="${ROOT}/target/debug/keyraft"
# Ports of the local cluster (gRPC BASE..BASE+2, HTTP +1000) and of Prometheus.
BASE_PORT="${KEYRAFT_MONITORING_BASE_PORT:-17400}"
PROM_PORT="${KEYRAFT_MONITORING_PROM_PORT:-19090}"
PARTITIONS=4
WAIT_SECONDS=120

if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
    echo "installing Debian's prometheus package (promtool and the server)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus >/dev/null \
      || { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus >/dev/null; }
  else
    echo "promtool and prometheus are needed: apt-get install prometheus (as root)" >&2
    exit 1
  fi
fi

promtool check rules "${RULES}"
promtool test rules hack/alerts/keyraft-alerts.test.yaml
python3 - "${DASHBOARD}" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
exprs = [t["expr"] for p in d["panels"] for t in p.get("targets", [])]
assert exprs, "dashboard has no queries"
print(f"dashboard: valid JSON, {len(d['panels'])} panels, {len(exprs)} queries")
PY

[[ -x "${KEYRAFT}" ]] || { echo "no ${KEYRAFT}: cargo build -p keyraft-node -p keyraft-client" >&2; exit 1; }
WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "${p}" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "${p}" 2>/dev/null || true; done
  rm -rf "${WORK}"
}
trap cleanup EXIT

"${KEYRAFT}" local up --nodes 3 --partitions "${PARTITIONS}" --replication-factor 3 \
  --data-dir "${WORK}/data" --base-port "${BASE_PORT}" >"${WORK}/local.log" 2>&1 &
PIDS+=($!)
ENDPOINTS="127.0.0.1:${BASE_PORT},127.0.0.1:$((BASE_PORT + 1)),127.0.0.1:$((BASE_PORT + 2))"
TARGETS=""
for i in 0 1 2; do TARGETS+="${TARGETS:+, }'127.0.0.1:$((BASE_PORT + 1000 + i))'"; done

# GET a URL (python3 rather than curl: CI machines have python3).
http_get() {
  python3 -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' "$1"
}

# Polls until "$@" succeeds, for at most WAIT_SECONDS.
wait_for() {
  local what="$1"; shift
  local deadline=$((SECONDS + WAIT_SECONDS))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS > deadline)); then
      echo "timed out waiting for ${what}" >&2
      tail -20 "${WORK}/local.log" >&2 || true
      exit 1
    fi
    sleep 1
  done
}
ready() { for i in 0 1 2; do http_get "http://127.0.0.1:$((BASE_PORT + 1000 + i))/readyz" || return 1; done; }
wait_for "three ready nodes" ready
# The local cluster runs TLS: the admin certificate `keyraft local up` issued.
export KEYRAFT_CA="${WORK}/data/tls/ca.pem" KEYRAFT_CERT="${WORK}/data/tls/admin.pem" \
  KEYRAFT_KEY="${WORK}/data/tls/admin-key.pem"

# Traffic, so the request series exist: writes, reads at two levels, a scan,
# and one refused request (draining a member that does not exist).
"${KEYRAFT}" --endpoints "${ENDPOINTS}" put monitoring-check v >/dev/null
"${KEYRAFT}" --endpoints "${ENDPOINTS}" get monitoring-check >/dev/null
"${KEYRAFT}" --endpoints "${ENDPOINTS}" get monitoring-check --consistency eventual >/dev/null
"${KEYRAFT}" --endpoints "${ENDPOINTS}" scan --limit 10 >/dev/null
if "${KEYRAFT}" --endpoints "${ENDPOINTS}" --timeout 5 admin drain no-such-member >/dev/null 2>&1; then
  echo "draining an unknown member succeeded" >&2
  exit 1
fi
http_get "http://127.0.0.1:$((BASE_PORT + 1000))/metrics" >"${WORK}/node0.txt"
grep -q '^keyraft_build_info{version="' "${WORK}/node0.txt"

cat >"${WORK}/prometheus.yml" <<YAML
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: keyraft
    static_configs:
      - targets: [${TARGETS}]
        labels:
          keyraft_cluster: monitoring-check
YAML
prometheus --config.file="${WORK}/prometheus.yml" --storage.tsdb.path="${WORK}/tsdb" \
  --web.listen-address="127.0.0.1:${PROM_PORT}" >"${WORK}/prometheus.log" 2>&1 &
PIDS+=($!)
API="http://127.0.0.1:${PROM_PORT}/api/v1"

# One leader per Raft group (meta + partitions), seen through the server.
leaders_per_group() {
  http_get "${API}/query?query=$(python3 -c 'import urllib.parse; print(urllib.parse.quote(
    "sum by (group) (keyraft_group_is_leader{keyraft_cluster=\"monitoring-check\"})"))')" |
    python3 -c '
import json, sys
r = json.load(sys.stdin)["data"]["result"]
want = int(sys.argv[1]) + 1
ok = len(r) == want and all(float(s["value"][1]) == 1 for s in r)
sys.exit(0 if ok else 1)' "${PARTITIONS}"
}
wait_for "Prometheus to see one leader in each of $((PARTITIONS + 1)) groups" leaders_per_group
echo "prometheus: one leader per group over $((PARTITIONS + 1)) groups"

# Every node metric the dashboard and rules name was ingested.
names_present() {
  http_get "${API}/label/__name__/values" >"${WORK}/names.json"
  python3 - "${WORK}/names.json" "${DASHBOARD}" "${RULES}" <<'PY'
import json, re, sys
have = set(json.load(open(sys.argv[1]))["data"])
used = set()
for f in sys.argv[2:]:
    used |= set(re.findall(r"\bkeyraft_[a-z0-9_]+", open(f).read()))
# keyraft_cluster is the label the scrape config adds, not a metric.
used = {n for n in used if not n.startswith("keyraft_operator_") and n != "keyraft_cluster"}
missing = sorted(used - have)
if missing:
    print("not exposed by a running node: " + ", ".join(missing), file=sys.stderr)
    sys.exit(1)
print(f"metric names: all {len(used)} node metrics used by the dashboard and rules are exposed")
PY
}
wait_for "every metric name in the dashboard and rules" names_present
names_present
