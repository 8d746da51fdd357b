#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs what is missing, then every test
# of the workspace (unit, integration, interoperability with h5py/pyzmq/PyMUST peers).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PLEURA_PYTHON="$PWD/.venv/bin/python"
# The C ABI test links the firmware bridge as a shared library, which `cargo test` does not
# build by itself.
cargo build --workspace --locked
cargo test --workspace --locked "$@"
