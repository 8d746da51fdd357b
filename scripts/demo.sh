#!/usr/bin/env bash
# The main job on the shipped default: installs what is missing, builds pleura and replays
# the bundled simulated lung recording (testdata/lung_sequence.zea.h5, 4 frames) with the
# shipped prior (testdata/model) through the daemon's per-frame pipeline. Writes
# out/demo/replay.h5, one PNG panel per frame in out/demo/png/ (B-mode | reconstruction |
# uncertainty | ground truth, with axes in mm, colour bars and the published aeration) and
# the aeration trend out/demo/png/aeration.png, then scores it against the recording's
# ground truth.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --locked --bin pleura
rec=testdata/lung_sequence.zea.h5
mkdir -p out/demo
target/release/pleura info "$rec"
target/release/pleura replay "$rec" --model testdata/model --config config/pleura.toml \
  --out out/demo/replay.h5 --png out/demo/png
target/release/pleura eval out/demo/replay.h5 --truth "$rec"
echo "demo: panels in out/demo/png/frame_*.png (B-mode | reconstruction | uncertainty | ground truth)"
echo "demo: aeration trend in out/demo/png/aeration.png"
