#!/usr/bin/env bash
# Installs what pleura needs on a fresh Debian machine, only what is missing:
#   - system libraries: libhdf5 (headers + pkg-config file) for the hdf5-metno crate,
#     pkg-config, a C compiler (for the firmware-bridge C test), Chromium (headless, for
#     the live view's browser test, tests/live_view.rs);
#   - a Python virtualenv at .venv (ignored by git) with the real peers the tests talk to:
#     h5py, numpy, pyzmq, and pymust (independent reference for beamforming/simulation).
# Safe to run repeatedly; prints what it does.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
pkg-config --exists hdf5 2>/dev/null || [ -e /usr/lib/x86_64-linux-gnu/hdf5/serial/libhdf5.so ] || need_apt+=(libhdf5-dev)
command -v pkg-config >/dev/null || need_apt+=(pkg-config)
command -v cc >/dev/null || need_apt+=(gcc)
command -v chromium >/dev/null || need_apt+=(chromium)
python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing system packages: ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating Python virtualenv .venv"
  python3 -m venv .venv
fi
if ! .venv/bin/python -c 'import h5py, numpy, zmq, pymust, scipy' 2>/dev/null; then
  echo "setup: installing Python test peers into .venv"
  .venv/bin/pip install -q --disable-pip-version-check -r scripts/requirements-test.txt
fi
