# Sourced by the measurement scripts: starts a local 3-node release-build
# cluster in the background and waits until it is ready.
#   start_local_cluster DIR PORT PARTITIONS   (sets LOCAL_UP_PID)
start_local_cluster() {
  local dir=$1 port=$2 parts=$3
  "${ROOT}/target/release/keyraft" local up --nodes 3 --partitions "${parts}" --replication-factor 3 \
    --data-dir "${dir}" --base-port "${port}" >"${dir}/up.log" 2>&1 &
  LOCAL_UP_PID=$!
  for _ in $(seq 1 120); do
    grep -q "ready at" "${dir}/up.log" && return 0
    kill -0 "${LOCAL_UP_PID}" 2>/dev/null || break
    sleep 0.5
  done
  echo "cluster did not become ready"
  cat "${dir}/up.log"
  return 1
}
