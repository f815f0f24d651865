#!/usr/bin/env bash
# What the nemesis's network family needs on a fresh Debian machine:
# `ip` (iproute2) for namespaces, veth pairs and a bridge, and `iptables` for
# the cuts. Installs only what is missing; without root it only says so (the
# nemesis then skips the network family with a message).
set -euo pipefail

need=()
command -v ip >/dev/null || need+=(iproute2)
command -v iptables >/dev/null || need+=(iptables)
((${#need[@]})) || exit 0
if [[ $(id -u) -ne 0 ]]; then
  echo "chaos-deps: missing ${need[*]} and not root: the nemesis will skip network faults" >&2
  exit 0
fi
command -v apt-get >/dev/null || { echo "chaos-deps: missing ${need[*]} and no apt-get" >&2; exit 0; }
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
