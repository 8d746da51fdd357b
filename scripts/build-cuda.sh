#!/usr/bin/env bash
# Builds the CUDA release binary of pleura on a machine without CUDA installed, with the
# CUDA 13.0 toolchain from PyPI's NVIDIA wheels (recipe: ../shared/gpu/BUILDING-CUDA.md).
#
#   scripts/build-cuda.sh            -> target/release/pleura with --features cuda, and
#                                       target/gpu-bundle/ (it + libhdf5 & co., scripts/gpu-bundle.sh)
#
# The binary runs where a CUDA 13 driver and runtime libraries exist, e.g. with
#   LD_LIBRARY_PATH=<site-packages>/nvidia/cu13/lib target/release/pleura ...
# Kernels are built for compute capability $CUDA_COMPUTE_CAP (default 90: H100/H200).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

VENV=.venv-cuda
CAP=${CUDA_COMPUTE_CAP:-90}
# Every part pinned: nvcc's own dependencies are unpinned and would pull a newer PTX ISA
# than a CUDA 13.0 driver loads, and one that cudarc's build script does not know.
WHEELS=(nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88
        nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 nvidia-cuda-nvrtc==13.0.88
        nvidia-cublas==13.0.2.14 nvidia-curand==10.4.0.35)
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
if ! "$VENV/bin/python" -c 'import nvidia.cu13' 2>/dev/null; then
  echo "build-cuda: installing the CUDA 13.0 toolchain wheels into $VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "${WHEELS[@]}"
fi
CU13=$("$VENV/bin/python" -c 'import importlib.util,os; s=importlib.util.find_spec("nvidia.cu13"); print(list(s.submodule_search_locations)[0])')

# A CUDA_HOME the build scripts understand: lib/ with the libraries and their sonames, and a
# link-time stub of the driver library (never shipped: the driver's libcuda.so.1 is used).
HOME_DIR="$PWD/target/cuda-home"
mkdir -p "$HOME_DIR/lib/stubs"
ln -sfn "$CU13/include" "$HOME_DIR/include"
ln -sfn "$CU13/bin" "$HOME_DIR/bin"
for spec in cudart:13 cublas:13 cublasLt:13 curand:10 nvrtc:13; do
  name=${spec%%:*}; major=${spec##*:}
  ln -sfn "$CU13/lib/lib$name.so.$major" "$HOME_DIR/lib/lib$name.so.$major"
  ln -sfn "$CU13/lib/lib$name.so.$major" "$HOME_DIR/lib/lib$name.so"
done
if [ ! -e "$HOME_DIR/lib/stubs/libcuda.so" ]; then
  cargo fetch --locked >/dev/null
  sys=$(find "${CARGO_HOME:-$HOME/.cargo}/registry/src" -path '*cudarc-*/src/driver/sys/mod.rs' | sort | tail -n 1)
  [ -n "$sys" ] || { echo "build-cuda: cudarc sources not found" >&2; exit 1; }
  grep -o 'pub unsafe fn cu[A-Za-z0-9_]*' "$sys" | awk '{print $4}' | sort -u \
    | sed 's/.*/int &(void){return 100;}/' > "$HOME_DIR/lib/stubs/libcuda_stub.c"
  gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$HOME_DIR/lib/stubs/libcuda.so" \
    "$HOME_DIR/lib/stubs/libcuda_stub.c"
  ln -sfn libcuda.so "$HOME_DIR/lib/stubs/libcuda.so.1"
fi

export PATH="$CU13/bin:$PATH" NVCC="$CU13/bin/nvcc" CUDA_HOME="$HOME_DIR" CUDA_PATH="$HOME_DIR"
export CUDA_COMPUTE_CAP="$CAP" CUDAFORGE_THREADS="${CUDAFORGE_THREADS:-2}"
export LIBRARY_PATH="$HOME_DIR/lib:$HOME_DIR/lib/stubs${LIBRARY_PATH:+:$LIBRARY_PATH}"
cargo build --release --locked --features cuda --bin pleura
echo "build-cuda: built target/release/pleura (CUDA, compute capability $CAP)"
# The GPU machines have no libhdf5: carry the binary with its non-CUDA libraries.
scripts/gpu-bundle.sh target/release/pleura target/gpu-bundle
echo "build-cuda: carry target/gpu-bundle to the GPU machine and run scripts/gpu-check.sh there"
