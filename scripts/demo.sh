#!/usr/bin/env bash
# The main job on the shipped default: installs what is missing, builds pleura, validates the
# bundled recording (4 frames of real Verasonics plane-wave RF, testdata/) and beamforms it
# into out/demo/: beamformed.h5 (envelope, B-mode, grid) and one B-mode PNG per frame.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --locked --bin pleura
rec=testdata/pwi_disk_4frames.zea.h5
mkdir -p out/demo
target/release/pleura info "$rec"
target/release/pleura beamform "$rec" --out out/demo/beamformed.h5 --png out/demo/png
echo "demo: images in out/demo/png/"
