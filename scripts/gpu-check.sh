#!/usr/bin/env bash
# The GPU check of the CUDA build (issue #8), run ON the GPU machine from the repository
# root. That machine has the NVIDIA driver, CUDA 13 runtime libraries in PyTorch's pip
# wheels and python3, but no Rust, no network and no libhdf5, so the binary comes
# prebuilt: on the build machine
#
#   scripts/build-cuda.sh          # -> target/gpu-bundle/{pleura,lib/} (scripts/gpu-bundle.sh)
#
# then carry target/gpu-bundle to the GPU machine (the device tool's `carry`) and run
#
#   scripts/gpu-check.sh STAGE...  # STAGE: sanity correctness bench-64 bench-128 bench-256
#                                  #        full-dps-64 full-dps-128 all
#
# Each stage fits in one 10-minute device call; `all` runs them in order. Everything goes
# to $OUT (default ./gpu-check-out): one markdown/text file per stage, named below.
#
# - sanity       nvidia-smi, glibc, the CUDA library folder; `pleura simulate` + `pleura info`
#                (libhdf5 from the bundle); `pleura bench unet --device cuda:0`.
#                -> sanity.txt
# - correctness  the same frames and seeds on the CPU and on cuda:0: (a) `pleura bench
#                sampler --check-against cpu` at 64 x 64 (max |diff| and PSNR of the
#                posterior means per method and K), (b) `pleura replay` of a simulated
#                recording with the shipped model on both devices, recon/mean compared with
#                numpy (when h5py is importable; else (a) stands alone).
#                -> correctness.md, replay-compare.txt, replay-{cpu,cuda}.h5
# - bench-N      `pleura bench sampler --device cuda:0 --sizes N --samples 1,4` (all methods,
#                50 steps, warm starts, 32 frames) -> bench-sampler-N.md
# - full-dps-N   full DPS, 1000 steps, every frame cold, K = 1 and 4, 3 frames
#                -> full-dps-N.md
set -euo pipefail
cd "$(dirname "$0")/.."
BUNDLE=${BUNDLE:-target/gpu-bundle}
OUT=${OUT:-$PWD/gpu-check-out}
DEVICE=${DEVICE:-cuda:0}
mkdir -p "$OUT"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

[ -x "$BUNDLE/pleura" ] || {
  echo "gpu-check: no $BUNDLE/pleura: build it with scripts/build-cuda.sh and carry $BUNDLE" >&2
  exit 1
}
BUNDLE=$(cd "$BUNDLE" && pwd)
# The CUDA 13 libraries of PyTorch's wheels (nvidia/cu13/lib), else the system's. With
# DEVICE=cpu (a dry run of this script with a CPU bundle) none are needed.
if [ "$DEVICE" = cpu ]; then CUDA_LIB=none; fi
CUDA_LIB=${CUDA_LIB:-$(python3 -c 'import importlib.util,os; s=importlib.util.find_spec("nvidia.cu13"); print(os.path.join(list(s.submodule_search_locations)[0],"lib"))' 2>/dev/null || true)}
if [ "$CUDA_LIB" != none ] && { [ -z "$CUDA_LIB" ] || [ ! -e "$CUDA_LIB/libcublas.so.13" ]; }; then
  CUDA_LIB=$(dirname "$(ldconfig -p | awk '/libcublas\.so\.13 /{print $NF; exit}')" 2>/dev/null || true)
fi
[ "$CUDA_LIB" = none ] || { [ -n "$CUDA_LIB" ] && [ -e "$CUDA_LIB/libcublas.so.13" ]; } || {
  echo "gpu-check: no libcublas.so.13 found (set CUDA_LIB to the folder holding the CUDA 13 libraries)" >&2
  exit 1
}
export LD_LIBRARY_PATH="$BUNDLE/lib:$CUDA_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
PLEURA="$BUNDLE/pleura"
# Tables on stdout; the log (device selection, operator builds) goes to the files too.
export RUST_LOG=${RUST_LOG:-info}

# Runs a pleura command, its stdout and stderr into $OUT/$1 (and the terminal).
run() {
  local file=$1
  shift
  echo "\$ pleura $*" | tee -a "$OUT/$file"
  "$PLEURA" "$@" 2>&1 | tee -a "$OUT/$file"
}

sanity() {
  local f=sanity.txt
  : > "$OUT/$f"
  {
    date -u
    nvidia-smi || true
    ldd --version | sed -n 1p
    echo "CUDA libraries: $CUDA_LIB"
    echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
    ldd "$PLEURA"
  } 2>&1 | tee -a "$OUT/$f"
  run $f simulate --grid 64,64,0.3,2 --frames 2 --seed 1 --out "$WORK/sanity.h5"
  run $f info "$WORK/sanity.h5"
  run $f bench unet --device "$DEVICE" --batch 4 --iters 5
}

correctness() {
  local f=correctness.md
  : > "$OUT/$f"
  run $f bench sampler --device "$DEVICE" --check-against cpu --sizes 64 --samples 1,4 \
    --steps 20 --frames 4 --repeats 1
  # The shipped model's grid is pleura's default 64 x 64 grid of 0.3 mm from 2 mm.
  run replay-compare.txt simulate --grid 64,64,0.3,2 --frames 4 --seed 7 --out "$WORK/rec.h5" \
    --scatterers born
  for d in cpu "$DEVICE"; do
    local name=${d%%:*}
    run replay-compare.txt replay "$WORK/rec.h5" --out "$OUT/replay-$name.h5" \
      --model testdata/model --sampler dds --steps 20 --samples 4 --seed 0 --device "$d"
  done
  if python3 -c 'import h5py, numpy' 2>/dev/null; then
    python3 - "$OUT/replay-cpu.h5" "$OUT/replay-cuda.h5" <<'PY' | tee -a "$OUT/replay-compare.txt"
import sys
import h5py
import numpy as np

with h5py.File(sys.argv[1], "r") as a, h5py.File(sys.argv[2], "r") as b:
    ma, mb = a["pleura/recon/mean"][()], b["pleura/recon/mean"][()]
    fa, fb = a["pleura/recon/failed"][()], b["pleura/recon/failed"][()]
    la, lb = a["pleura/recon/latency_ms"][()], b["pleura/recon/latency_ms"][()]
ok = (fa == 0) & (fb == 0)
d = (ma[ok] - mb[ok]).astype(np.float64)
mse = float(np.mean(d * d)) if d.size else float("nan")
psnr = float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)
print(f"frames compared: {int(ok.sum())} of {len(ok)} (failed cpu {int(fa.sum())}, cuda {int(fb.sum())})")
print(f"recon/mean cpu vs cuda: max abs diff {np.abs(d).max() if d.size else float('nan'):.3e}, "
      f"PSNR {psnr:.1f} dB (peak 1)")
print(f"latency ms median: cpu {np.median(la):.1f}, cuda {np.median(lb):.1f}")
PY
  else
    echo "h5py/numpy not importable: replay outputs not compared here (see correctness.md)" \
      | tee -a "$OUT/replay-compare.txt"
  fi
}

bench() {
  local n=$1 f=bench-sampler-$1.md
  : > "$OUT/$f"
  run $f bench sampler --device "$DEVICE" --sizes "$n" --samples 1,4 --steps 50 --frames 32
}

full_dps() {
  local n=$1 f=full-dps-$1.md
  : > "$OUT/$f"
  run $f bench sampler --device "$DEVICE" --sizes "$n" --samples 1,4 --methods dps \
    --steps 1000 --cold --frames 3 --repeats 1
}

[ $# -gt 0 ] || set -- all
for stage in "$@"; do
  case $stage in
    sanity) sanity ;;
    correctness) correctness ;;
    bench-*) bench "${stage#bench-}" ;;
    full-dps-*) full_dps "${stage#full-dps-}" ;;
    all)
      sanity
      correctness
      for n in 64 128 256; do bench $n; done
      for n in 64 128; do full_dps $n; done
      ;;
    *)
      echo "gpu-check: unknown stage $stage" >&2
      exit 2
      ;;
  esac
done
echo "gpu-check: results in $OUT"
