#!/usr/bin/env bash
# Regenerates the bundled recordings in testdata/:
# - pwi_disk_4frames.zea.h5: the first 4 frames of the real plane-wave recording
#   ../shared/data/pwi_disk/pwi_disk.zea.h5, written by pleura's own recorder
#   (examples/make_testdata.rs), so the bundled file is also a sample of what pleura writes;
# - lung_sequence.zea.h5: a simulated 4-frame lung sequence (64-element probe, plane waves
#   at -8/0/8 degrees, 20 dB SNR) on the shipped model's grid (64 x 64 pixels of 0.3 mm from
#   2 mm depth), phantom seed 9001: the prior was trained on seeds 1-512, so the demo
#   reconstructs a lung the model has never seen.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p testdata
cargo run --quiet --example make_testdata -- \
  ../shared/data/pwi_disk/pwi_disk.zea.h5 testdata/pwi_disk_4frames.zea.h5 4
cargo run --quiet --release --bin pleura -- simulate --out testdata/lung_sequence.zea.h5 \
  --frames 4 --seed 9001 --grid 64,64,0.3,2
