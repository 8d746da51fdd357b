#!/usr/bin/env bash
# The main job on the shipped default: installs what is missing, builds pleura and runs it
# on the bundled recording in testdata/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --locked --bin pleura
target/release/pleura info testdata/pwi_disk_4frames.zea.h5
