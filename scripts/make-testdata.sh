#!/usr/bin/env bash
# Regenerates the bundled recordings in testdata/:
# - pwi_disk_4frames.zea.h5: the first 4 frames of the real plane-wave recording
#   ../shared/data/pwi_disk/pwi_disk.zea.h5, written by pleura's own recorder
#   (examples/make_testdata.rs), so the bundled file is also a sample of what pleura writes;
# - lung_sequence.zea.h5: a simulated 4-frame lung sequence (64-element probe, plane waves
#   at -8/0/8 degrees, 20 dB SNR) on the shipped model's grid (64 x 64 pixels of 0.3 mm from
#   2 mm depth), phantom seed 9001: the prior was trained on seeds 1-512, so the demo
#   reconstructs a lung the model has never seen;
# - simus_lung_1200{1,2,3}.zea.h5: RF that pleura did not make, one frame each of phantoms
#   12001-12003 (pleura simulate --frames 1) remade by PyMUST simus with speckle
#   (scripts/simus_rf.py, seed = phantom seed; needs .venv's pymust): 12001 and 12002
#   calibrate the echo data term, 12003 is reconstructed with it (tests/echo_power.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p testdata
cargo run --quiet --example make_testdata -- \
  ../shared/data/pwi_disk/pwi_disk.zea.h5 testdata/pwi_disk_4frames.zea.h5 4
cargo run --quiet --release --bin pleura -- simulate --out testdata/lung_sequence.zea.h5 \
  --frames 4 --seed 9001 --grid 64,64,0.3,2 --scatterers born
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for seed in 12001 12002 12003; do
  cargo run --quiet --release --bin pleura -- simulate --out "$tmp/p-$seed.h5" --frames 1 --seed "$seed" \
    --scatterers born
  .venv/bin/python scripts/simus_rf.py "$tmp/p-$seed.h5" "$tmp/s-$seed.h5" --seed "$seed"
  # Copied object by object: the script's in-place replacement of the RF leaves the
  # phantom's RF as unreclaimed space (1.1 MB against 0.6 MB).
  .venv/bin/python - "$tmp/s-$seed.h5" "testdata/simus_lung_$seed.zea.h5" <<'PY'
import sys, h5py
with h5py.File(sys.argv[1], "r") as src, h5py.File(sys.argv[2], "w") as dst:
    for k, v in src.attrs.items():
        dst.attrs[k] = v
    for k in src:
        src.copy(src[k], dst, name=k)
PY
done
