#!/usr/bin/env bash
# Regenerates testdata/pwi_disk_4frames.zea.h5: the first 4 frames of the real plane-wave
# recording ../shared/data/pwi_disk/pwi_disk.zea.h5, written by pleura's own recorder
# (examples/make_testdata.rs), so the bundled file is also a sample of what pleura writes.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p testdata
cargo run --quiet --example make_testdata -- \
  ../shared/data/pwi_disk/pwi_disk.zea.h5 testdata/pwi_disk_4frames.zea.h5 4
