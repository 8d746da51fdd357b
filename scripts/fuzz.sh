#!/usr/bin/env bash
# Fuzzes the wire protocol decoder (fuzz/fuzz_targets/decode.rs) for a bounded time.
#
#   scripts/fuzz.sh [SECONDS]      (default 300)
#
# A benchmark-style script, not part of the test suite (see fuzz/README.md and
# docs/BENCHMARKS.md, "Fuzzing the wire decoder"). It installs cargo-fuzz when missing,
# regenerates the seed corpus (valid messages of every kind, signed and unsigned:
# fuzz/examples/seeds.rs), builds the target with AddressSanitizer and runs it with ONE
# worker for SECONDS (libFuzzer's -max_total_time), then prints libFuzzer's final stats,
# its last status line and the corpus size. Exits non-zero when libFuzzer fails or leaves
# a new crash/leak/timeout/oom artifact in fuzz/artifacts/decode/.
#
# Works on stable Rust: RUSTC_BOOTSTRAP=1 unlocks the nightly-only sanitizer flags that
# cargo-fuzz passes (harmless on nightly). Environment:
#   FUZZ_SANITIZER=address|none   sanitizer (default address)
#   FUZZ_FRESH=1                  empty fuzz/corpus/decode first (start from the seeds only)
#   FUZZ_RSS_LIMIT_MB=2048        libFuzzer's -rss_limit_mb
set -euo pipefail

seconds="${1:-300}"
case "$seconds" in
'' | *[!0-9]*)
    echo "usage: $0 [SECONDS]" >&2
    exit 2
    ;;
esac
sanitizer="${FUZZ_SANITIZER:-address}"
rss_limit="${FUZZ_RSS_LIMIT_MB:-2048}"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

corpus="fuzz/corpus/decode"
artifacts="fuzz/artifacts/decode"
log="fuzz/target/fuzz-decode.log"
mkdir -p "$artifacts" fuzz/target
if [ "${FUZZ_FRESH:-0}" = 1 ]; then
    rm -rf "$corpus"
fi

echo "== writing the seed corpus"
(cd fuzz && cargo run --release --quiet --example seeds -- corpus/decode)

echo "== building the target (sanitizer: $sanitizer)"
cargo fuzz build --sanitizer "$sanitizer" decode

before="$(ls "$artifacts")"
echo "== fuzzing decode for ${seconds}s, one worker, rss limit ${rss_limit} MB"
echo "   $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores," \
    "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')," \
    "load average $(cut -d' ' -f1-3 /proc/loadavg)"
rc=0
cargo fuzz run --sanitizer "$sanitizer" decode -- \
    -max_total_time="$seconds" -rss_limit_mb="$rss_limit" -timeout=10 \
    -print_final_stats=1 2>&1 | tee "$log" || rc=$?

echo
echo "== result"
grep -E '^stat::' "$log" || true
last="$(grep -E '^#[0-9]+.*cov: ' "$log" | tail -n 1 || true)"
echo "last status line: ${last:-none}"
files="$(find "$corpus" -type f | wc -l)"
bytes="$(find "$corpus" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}')"
echo "corpus: $files files, $bytes bytes ($corpus)"
new="$(comm -13 <(printf '%s\n' "$before" | sort) <(ls "$artifacts" | sort) | sed '/^$/d')"
if [ -n "$new" ]; then
    echo "NEW ARTIFACTS in $artifacts:"
    printf '  %s\n' $new
    for f in $new; do
        echo "  $f (hex, first 1024 bytes): $(head -c 1024 "$artifacts/$f" | od -An -v -tx1 | tr -d ' \n')"
    done
    exit 1
fi
if [ "$rc" -ne 0 ]; then
    echo "cargo fuzz run failed (exit $rc); log: $log"
    exit "$rc"
fi
echo "outcome: no crash (log: $log)"
