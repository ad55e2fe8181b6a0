#!/usr/bin/env bash
# Installs what jobforge's tests and quickstart need, only when missing:
#   Debian packages: buildah skopeo docker-registry busybox-static git uidmap apache2-utils (htpasswd
#   for the registry that requires auth), and for the docker
#   profile's container engine (hack/docker-engine.sh) podman runc debootstrap
#   Python packages (in target/pyvenv): py-consul python-nomad hvac mcp cryptography  (third-party wire checks)
# Usage: hack/prereqs.sh [--no-python]
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
for pair in buildah:buildah skopeo:skopeo docker-registry:docker-registry busybox:busybox-static git:git newuidmap:uidmap htpasswd:apache2-utils \
  podman:podman runc:runc debootstrap:debootstrap; do
  cmd=${pair%%:*}; pkg=${pair#*:}
  command -v "$cmd" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "prereqs: installing ${need_apt[*]} with apt-get" >&2
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "prereqs: need root or sudo to install ${need_apt[*]}" >&2; exit 1; }
    SUDO="sudo"
  fi
  $SUDO apt-get update -qq || { echo "prereqs: apt-get update failed; install ${need_apt[*]} by hand" >&2; exit 1; }
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null \
    || { echo "prereqs: could not install ${need_apt[*]}" >&2; exit 1; }
fi

if [ "${1:-}" != "--no-python" ]; then
  venv=target/pyvenv
  if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv" || { echo "prereqs: python3 -m venv failed (install python3-venv)" >&2; exit 1; }
  fi
  if ! "$venv/bin/python" -c 'import consul, nomad, hvac, mcp, cryptography' >/dev/null 2>&1; then
    echo "prereqs: installing py-consul python-nomad hvac mcp cryptography into $venv" >&2
    "$venv/bin/pip" install -q --disable-pip-version-check \
      'py-consul==1.8.0' 'python-nomad==2.1.0' 'hvac==2.4.0' 'mcp>=1.30' 'cryptography>=42' \
      || { echo "prereqs: pip install failed" >&2; exit 1; }
  fi
fi
