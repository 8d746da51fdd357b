#!/usr/bin/env bash
# Calibration and check of the aeration interval (issue 6; docs/reconstruction.md, "K
# samples, uncertainty and the aeration interval"; results in docs/BENCHMARKS.md,
# "Interval coverage").
#
#   scripts/calibrate-interval.sh OUT_DIR fit   [options]
#   scripts/calibrate-interval.sh OUT_DIR check [options] --scale S
#
# Simulates one held-out sequence per seed (`pleura simulate --seed S`, never a training
# seed) and replays it with the sampler of the configuration (`pleura replay`), then:
#
# fit    replays with `spread_scale = 1` and fits the scale by split-conformal calibration
#        (Vovk et al. 2005; Angelopoulos & Bates 2021, "A gentle introduction to conformal
#        prediction"): per frame, the scale s_i at which the interval just holds the truth's
#        lung mean, |a - t| = 1.96 sqrt((s_i sd)^2 + b^2) (sd: `recon/aeration_sd`, b:
#        `recon/boundary_sd`); the fitted scale is the ceil((n + 1) 0.95)-th smallest s_i,
#        which holds the truth on at least 95 % of exchangeable new frames. Prints the
#        coverage at scale 1 and at the fitted scale.
# check  replays with `spread_scale = S` and scores every frame with `pleura eval`: the
#        share of frames whose published interval holds the truth, with its 95 % (Wilson)
#        interval, the published aeration's error and the categories.
#
# Frames of one sequence are correlated (breathing moves one phantom), so the guarantee is
# per sequence rather than per frame; use many seeds and few frames.
#
# Options:
#   --seeds FIRST-LAST   seeds (default 6001-6050 for fit, 7001-7050 for check; > 512)
#   --frames N           frames per sequence (default 2)
#   --model DIR          model (default testdata/model)
#   --config FILE        base configuration (default config/pleura.toml)
#   --scale S            spread_scale of check (required there)
#   --jobs J             replays run at once (default 1; each uses CANDLE_NUM_THREADS cores)
#   --resume             keep recordings and reconstructions that already exist
#
# Writes under OUT_DIR: data/seq-S.h5, configs/, recon/MODE-S.h5 (+ .log), json/ (check),
# commands.log, result.md.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit "${1:-0}"; }
[ $# -ge 2 ] || usage 1
OUT=$1
MODE=$2
shift 2
case $MODE in fit | check) ;; *) echo "calibrate-interval: mode must be fit or check, not $MODE" >&2; exit 1 ;; esac

SEEDS=
FRAMES=2
MODEL=testdata/model
CONFIG=config/pleura.toml
SCALE=
JOBS=1
RESUME=0
TRAINING_LAST_SEED=512
while [ $# -gt 0 ]; do
  case $1 in
    --seeds) SEEDS=$2; shift 2 ;;
    --frames) FRAMES=$2; shift 2 ;;
    --model) MODEL=$2; shift 2 ;;
    --config) CONFIG=$2; shift 2 ;;
    --scale) SCALE=$2; shift 2 ;;
    --jobs) JOBS=$2; shift 2 ;;
    --resume) RESUME=1; shift ;;
    -h | --help) usage 0 ;;
    *) echo "calibrate-interval: unknown option $1" >&2; usage 1 ;;
  esac
done
if [ "$MODE" = fit ]; then
  SEEDS=${SEEDS:-6001-6050}
  SCALE=1
else
  SEEDS=${SEEDS:-7001-7050}
  [ -n "$SCALE" ] || { echo "calibrate-interval: check needs --scale S" >&2; exit 1; }
fi
if ! [[ $SEEDS =~ ^([0-9]+)-([0-9]+)$ ]]; then
  echo "calibrate-interval: --seeds must be FIRST-LAST, not $SEEDS" >&2
  exit 1
fi
FIRST=${BASH_REMATCH[1]}
LAST=${BASH_REMATCH[2]}
if [ "$FIRST" -le "$TRAINING_LAST_SEED" ] || [ "$LAST" -lt "$FIRST" ]; then
  echo "calibrate-interval: seeds $SEEDS must be held out (> $TRAINING_LAST_SEED) and increasing" >&2
  exit 1
fi
[ -f "$CONFIG" ] || { echo "calibrate-interval: no configuration $CONFIG" >&2; exit 1; }
[ -d "$MODEL" ] || { echo "calibrate-interval: no model directory $MODEL" >&2; exit 1; }
grep -q '^spread_scale = ' "$CONFIG" || { echo "calibrate-interval: $CONFIG has no spread_scale" >&2; exit 1; }

PLEURA=target/release/pleura
[ -x "$PLEURA" ] || cargo build --release --locked --bin pleura
PYTHON=${PLEURA_PYTHON:-.venv/bin/python}
[ -x "$PYTHON" ] || scripts/setup.sh

mkdir -p "$OUT"/data "$OUT"/configs "$OUT"/recon "$OUT"/json
LOG=$OUT/commands.log
echo "# $(date -u +%FT%TZ) scripts/calibrate-interval.sh $OUT $MODE --seeds $SEEDS --frames $FRAMES --scale $SCALE --config $CONFIG (model $MODEL)" >> "$LOG"
CFG=$OUT/configs/$MODE-scale$SCALE.toml
sed "s|^spread_scale = .*|spread_scale = $SCALE|" "$CONFIG" > "$CFG"

# One sequence: simulate, replay, (check) evaluate. Runs in a child shell for --jobs.
export PLEURA OUT MODE FRAMES MODEL CFG LOG RESUME
one() {
  local s=$1 data=$OUT/data/seq-$1.h5 recon=$OUT/recon/$MODE-$1.h5
  if ! { [ "$RESUME" = 1 ] && [ -f "$data" ]; }; then
    # The RF term's own model: the spread scale is the RF term's (speckle RF is a poor fit).
    echo "$PLEURA simulate --out $data --frames $FRAMES --seed $s --scatterers born" >> "$LOG"
    "$PLEURA" simulate --out "$data" --frames "$FRAMES" --seed "$s" --scatterers born > /dev/null
  fi
  if ! { [ "$RESUME" = 1 ] && [ -f "$recon" ]; }; then
    echo "$PLEURA replay $data --out $recon --config $CFG --model $MODEL --device cpu" >> "$LOG"
    "$PLEURA" replay "$data" --out "$recon" --config "$CFG" --model "$MODEL" --device cpu \
      2> "$OUT/recon/$MODE-$s.log"
  fi
  if [ "$MODE" = check ]; then
    "$PLEURA" eval "$recon" --truth "$data" --json > "$OUT/json/$s.json"
  fi
}
export -f one
seq "$FIRST" "$LAST" | xargs -P "$JOBS" -I{} bash -c 'one {}'

"$PYTHON" - "$OUT" "$MODE" "$FIRST" "$LAST" "$SCALE" <<'PY' | tee "$OUT/result.md"
import json, math, sys

import h5py
import numpy as np

out, mode, first, last, scale = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
Z95 = 1.959963984540054
seeds = range(first, last + 1)


def wilson(k, n):
    """95 % Wilson score interval of a proportion k / n."""
    if n == 0:
        return (float("nan"), float("nan"))
    p, z = k / n, Z95
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (c - h, c + h)


if mode == "fit":
    need, hold1, failed = [], 0, 0
    for s in seeds:
        with h5py.File(f"{out}/recon/fit-{s}.h5") as r, h5py.File(f"{out}/data/seq-{s}.h5") as t:
            truth = t["pleura/mean_aeration"][:]
            for f in range(len(truth)):
                if r["pleura/recon/failed"][f]:
                    failed += 1
                    continue
                a, sd, b = (float(r[f"pleura/recon/{k}"][f]) for k in ("aeration", "aeration_sd", "boundary_sd"))
                lo, hi = r["pleura/recon/aeration_ci"][f]
                hold1 += int(lo <= truth[f] <= hi)
                excess = (abs(a - truth[f]) / Z95) ** 2 - b * b
                if excess <= 0:
                    need.append(0.0)
                elif sd > 0:
                    need.append(math.sqrt(excess) / sd)
                else:
                    need.append(math.inf)
    n = len(need)
    need.sort()
    rank = math.ceil((n + 1) * 0.95)
    fitted = need[rank - 1] if rank <= n else math.inf
    print(f"| frames | failed | coverage at spread_scale 1 | fitted spread_scale (rank {rank} of {n}) | coverage at the fitted scale |")
    print("|---|---|---|---|---|")
    held = sum(1 for v in need if v <= fitted)
    print(f"| {n} | {failed} | {hold1}/{n} ({hold1 / n:.1%}) | {fitted:.3f} | {held}/{n} ({held / n:.1%}) |")
    print()
    print("needed scale quantiles (50/80/90/95 %):", np.quantile(need, [0.5, 0.8, 0.9, 0.95]).round(3).tolist())
else:
    frames = []
    for s in seeds:
        frames += json.load(open(f"{out}/json/{s}.json"))["frames"]
    ci = [f["mean_ci_covers"] for f in frames if f.get("mean_ci_covers") is not None]
    err = [f["published_aeration_abs_error"] for f in frames if f.get("published_aeration_abs_error") is not None]
    cat = [f["published_category"] == f["category_truth"] for f in frames if f.get("published_category") is not None]
    k, n = sum(ci), len(ci)
    lo, hi = wilson(k, n)
    print(f"| frames | spread_scale | 95 % interval coverage | its 95 % interval | published aeration MAE | largest error | categories right |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {n} | {scale} | {k}/{n} ({k / n:.1%}) | {lo:.1%}-{hi:.1%} | {np.mean(err):.4f} | {np.max(err):.4f} | {sum(cat)}/{len(cat)} |")
PY
