# Sourced by the measurement scripts: starts a local 3-node release-build
# cluster in the background and waits until it is ready.
#   start_local_cluster DIR PORT PARTITIONS   (sets LOCAL_UP_PID)
# The cluster runs TLS (KEYRAFT_CA/CERT/KEY are exported for the keyraft CLI)
# unless KEYRAFT_LOCAL_PLAINTEXT=1.
start_local_cluster() {
  local dir=$1 port=$2 parts=$3
  local plain=()
  [ "${KEYRAFT_LOCAL_PLAINTEXT:-0}" = 1 ] && plain=(--insecure-plaintext)
  "${ROOT}/target/release/keyraft" local up --nodes 3 --partitions "${parts}" --replication-factor 3 \
    --data-dir "${dir}" --base-port "${port}" "${plain[@]}" >"${dir}/up.log" 2>&1 &
  LOCAL_UP_PID=$!
  for _ in $(seq 1 120); do
    if grep -q "ready at" "${dir}/up.log"; then
      if [ -f "${dir}/tls/ca.pem" ]; then
        export KEYRAFT_CA="${dir}/tls/ca.pem" KEYRAFT_CERT="${dir}/tls/admin.pem" KEYRAFT_KEY="${dir}/tls/admin-key.pem"
      fi
      return 0
    fi
    kill -0 "${LOCAL_UP_PID}" 2>/dev/null || break
    sleep 0.5
  done
  echo "cluster did not become ready"
  cat "${dir}/up.log"
  return 1
}
