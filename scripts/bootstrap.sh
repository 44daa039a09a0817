#!/usr/bin/env bash
# Prepare a fresh Debian/Ubuntu machine (Python >= 3.10) to run edgeboost from this checkout.
#   scripts/bootstrap.sh main   C compiler + .venv with the compile and greengrass extras
#   scripts/bootstrap.sh test   everything the test suite needs, cross compilers and qemu too
# Idempotent: installs only what is missing. System packages need root (or sudo).
set -euo pipefail
mode=${1:-main}
cd "$(dirname "$0")/.."

packages=(gcc libc6-dev python3-venv)
if [ "$mode" = test ]; then
  packages+=(gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf libc6-dev-arm64-cross libc6-dev-armhf-cross
             qemu-user-static binutils)
  # Greengrass nucleus lite (broker/greengrass_lite.py builds its IPC daemons from ../shared).
  packages+=(build-essential cmake pkg-config libssl-dev libcurl4-openssl-dev uuid-dev libzip-dev
             libsqlite3-dev libyaml-dev libsystemd-dev libevent-dev liburiparser-dev)
  # A device's interpreter for the serving benchmark's memory figures (benchmarks/serving.py).
  packages+=(python3-cffi)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  # python3-venv is Debian's split-out venv; a Python that already has venv does not need it.
  if [ "${missing[*]}" = python3-venv ] && "${PYTHON:-python3}" -c "import ensurepip, venv" 2>/dev/null; then
    missing=()
  fi
fi
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "bootstrap: installing ${missing[*]}" >&2
  # One stale mirror index must not stop the install; a package that is really missing does.
  $sudo apt-get update -qq || echo "bootstrap: apt-get update reported errors; continuing" >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
extra=compile,greengrass
[ "$mode" = test ] && extra=dev
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[$extra]"
