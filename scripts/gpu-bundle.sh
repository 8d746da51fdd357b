#!/usr/bin/env bash
# Packs a pleura binary with the shared libraries it needs beyond glibc and CUDA into one
# folder, for a machine that has neither libhdf5 nor Rust (the GPU machines):
#
#   scripts/gpu-bundle.sh [BINARY] [OUTDIR]     (defaults: target/release/pleura target/gpu-bundle)
#
# OUTDIR/pleura is the binary without debug information; OUTDIR/lib holds every library
# `ldd` resolves for it (libhdf5 and what it links: libcurl, libsz, libaec, ...) except the
# C runtime (libc, libm, libgcc_s, libresolv, libpthread, libdl, librt, the loader), which
# every Linux has, and the CUDA libraries (libcuda, libcudart, libcublas, libcublasLt,
# libcurand, libnvrtc), which come from the GPU machine's driver and its PyTorch wheels.
# Run it there with
#
#   LD_LIBRARY_PATH=OUTDIR/lib:<nvidia/cu13/lib> OUTDIR/pleura ...
#
# (scripts/gpu-check.sh does this). The folder must stay under 64 MiB to be carried to the
# device machine; the script fails above BUNDLE_LIMIT_MIB (default 60).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/pleura}
OUT=${2:-target/gpu-bundle}
LIMIT_MIB=${BUNDLE_LIMIT_MIB:-60}
[ -x "$BIN" ] || { echo "gpu-bundle: no executable $BIN" >&2; exit 1; }

rm -rf "$OUT"
mkdir -p "$OUT/lib"
strip --strip-debug -o "$OUT/pleura" "$BIN"

runtime='^(libc|libm|libgcc_s|libresolv|libpthread|libdl|librt|ld-linux-x86-64|linux-vdso)\.so'
cuda='^(libcuda|libcudart|libcublas|libcublasLt|libcurand|libnvrtc)\.so'
missing=()
while read -r name arrow path _; do
  [ "$arrow" = "=>" ] || continue
  if [[ "$name" =~ $runtime || "$name" =~ $cuda ]]; then
    continue
  fi
  if [ "$path" = "not" ]; then
    missing+=("$name")
    continue
  fi
  # Copy the file under the name the binary asks for (the soname), following symlinks.
  cp -L "$path" "$OUT/lib/$name"
done < <(ldd "$BIN")
if [ ${#missing[@]} -gt 0 ]; then
  echo "gpu-bundle: ldd cannot resolve ${missing[*]} for $BIN" >&2
  exit 1
fi

# Newest glibc symbol version any bundled file needs (the GPU machine's glibc must be at
# least this).
glibc=$(for f in "$OUT/pleura" "$OUT"/lib/*; do
  objdump -T "$f" 2>/dev/null | grep -o 'GLIBC_[0-9.]*' || true
done | sort -u -V | tail -n 1)
size_kib=$(du -sk "$OUT" | cut -f1)
echo "gpu-bundle: $OUT: pleura + $(ls "$OUT/lib" | wc -l) libraries, $((size_kib / 1024)) MiB, needs glibc >= ${glibc#GLIBC_}"
ls -l "$OUT/lib" | awk 'NR > 1 {printf "  %8.1f KiB  %s\n", $5 / 1024, $9}'
if [ "$size_kib" -gt $((LIMIT_MIB * 1024)) ]; then
  echo "gpu-bundle: $OUT is over $LIMIT_MIB MiB: too large to carry to the device machine" >&2
  exit 1
fi
