#!/usr/bin/env bash
# Evaluation of posterior sampling against the classical baselines on held-out simulated
# sequences (issue 6; results in docs/BENCHMARKS.md, "Posterior sampling").
#
#   scripts/evaluate-posterior.sh OUT_DIR [options]
#
# 1. Simulates the evaluation sequences (`pleura simulate --seed S`, default seeds 1001 and
#    1002, 4 frames each, the default 64 x 64 grid the shipped model is trained on). The
#    prior's training set, `pleura simulate --images-only --frames 2048 --frames-per-seed 4
#    --seed 1`, used phantom seeds 1..512 (one phantom per 4 frames, consecutive seeds), so
#    any seed above 512 is held out; tuning used seed 3001 (docs/BENCHMARKS.md).
#    With --rf simus the RF of each sequence is then made again, from the same aeration
#    maps on the same scan, by PyMUST's simus (scripts/simus_rf.py: speckle, attenuation,
#    simus's own pulse, gain and polarity, 20 dB SNR; simulator seed = phantom seed), so
#    the methods are scored on RF that pleura's operator did not make; the phantom file
#    with pleura's RF stays beside it as data/seq-S.pleura.h5.
# 2. Reconstructs them with DAS, Tikhonov and TV (`pleura reconstruct-baseline`), full
#    1000-step DPS, and the fast variants (`pleura replay --sampler ddim-dps|dds`), K
#    samples per frame. Full DPS covers only the first --dps-frames frames of the first
#    --dps-sequences sequences (about 15 min per frame on one CPU core).
# 3. Runs `pleura eval --json` on every reconstruction and prints two markdown tables:
#    every method on the frames it covers, and every method on the frames full DPS covers.
#
# Writes under OUT_DIR: data/ (recordings), configs/ (the sampler configuration of each
# row), recon/ (reconstructions and their logs), json/ (eval summaries), commands.log
# (every command run), table.md (the tables).
#
# Options:
#   --model DIR          model checkpoint (default testdata/model)
#   --rf pleura|pleura-born|simus
#                        who makes the RF: pleura simulate with speckle (its default since
#                        issue 19: the RF term does not explain it; give --calibration),
#                        pleura simulate --scatterers born (the RF term's own model, the
#                        "inverse crime" of the tables before issue 19), or PyMUST simus
#                        (needs the Python of PLEURA_PYTHON, default .venv/bin/python, with
#                        pymust and h5py)
#   --simus-per-pixel N  scatterers per pixel of the simus RF (default 4)
#   --config FILE        base configuration (default config/pleura.toml)
#   --seeds "S1 S2"      evaluation seeds (default "1001 1002"; must be > 512)
#   --frames N           frames per sequence (default 4)
#   --samples K          posterior samples per frame (default 4)
#   --dps-steps N        steps of full DPS (default 1000)
#   --dps-frames N       frames of full DPS per sequence (default 1)
#   --dps-sequences N    sequences full DPS runs on (default 1)
#   --ddim-steps "S..."  step counts of the ddim-dps rows (default "20 50")
#   --dds-steps "S..."   step counts of the dds rows (default "10 20")
#   --max-frames N       frames per sequence the baselines and fast rows reconstruct
#                        (default: all)
#   --set-dps K=V, --set-ddim K=V, --set-dds K=V
#                        override a [sampler] setting of those rows (repeatable)
#   --calibration FILE   echo-power calibration for every sampler row (`replay
#                        --calibration`; `pleura calibrate`, docs/reconstruction.md "Echo
#                        power"); the rows' names get "-calibrated"
#   --skip-dps           leave out full DPS
#   --resume             keep reconstructions that already exist in OUT_DIR
#
# Sampling on the CPU is single-threaded per run; set CANDLE_NUM_THREADS to use more cores.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit "${1:-0}"; }
[ $# -ge 1 ] || usage 1
case $1 in -h | --help) usage 0 ;; esac
OUT=$1
shift

MODEL=testdata/model
RF=pleura
SIMUS_PER_PIXEL=4
CONFIG=config/pleura.toml
SEEDS="1001 1002"
FRAMES=4
SAMPLES=4
DPS_STEPS=1000
DPS_FRAMES=1
DPS_SEQUENCES=1
DDIM_STEPS="20 50"
DDS_STEPS="10 20"
MAX_FRAMES=
SET_DPS=()
SET_DDIM=()
SET_DDS=()
SKIP_DPS=0
RESUME=0
TRAINING_LAST_SEED=512

while [ $# -gt 0 ]; do
  case $1 in
    --model) MODEL=$2; shift 2 ;;
    --rf) RF=$2; shift 2 ;;
    --simus-per-pixel) SIMUS_PER_PIXEL=$2; shift 2 ;;
    --config) CONFIG=$2; shift 2 ;;
    --seeds) SEEDS=$2; shift 2 ;;
    --frames) FRAMES=$2; shift 2 ;;
    --samples) SAMPLES=$2; shift 2 ;;
    --dps-steps) DPS_STEPS=$2; shift 2 ;;
    --dps-frames) DPS_FRAMES=$2; shift 2 ;;
    --dps-sequences) DPS_SEQUENCES=$2; shift 2 ;;
    --ddim-steps) DDIM_STEPS=$2; shift 2 ;;
    --dds-steps) DDS_STEPS=$2; shift 2 ;;
    --max-frames) MAX_FRAMES=$2; shift 2 ;;
    --set-dps) SET_DPS+=("$2"); shift 2 ;;
    --set-ddim) SET_DDIM+=("$2"); shift 2 ;;
    --set-dds) SET_DDS+=("$2"); shift 2 ;;
    --calibration) CALIBRATION=$2; shift 2 ;;
    --skip-dps) SKIP_DPS=1; shift ;;
    --resume) RESUME=1; shift ;;
    -h | --help) usage 0 ;;
    *) echo "evaluate-posterior: unknown option $1" >&2; usage 1 ;;
  esac
done

for s in $SEEDS; do
  if ! [[ $s =~ ^[0-9]+$ ]] || [ "$s" -le "$TRAINING_LAST_SEED" ]; then
    echo "evaluate-posterior: seed $s is not held out (training used seeds 1..$TRAINING_LAST_SEED)" >&2
    exit 1
  fi
done
case $RF in
  pleura | pleura-born) ;;
  simus) PYTHON=${PLEURA_PYTHON:-.venv/bin/python} ;;
  *) echo "evaluate-posterior: --rf must be pleura, pleura-born or simus, not $RF" >&2; exit 1 ;;
esac
[ -f "$CONFIG" ] || { echo "evaluate-posterior: no configuration $CONFIG" >&2; exit 1; }
[ -d "$MODEL" ] || { echo "evaluate-posterior: no model directory $MODEL" >&2; exit 1; }

PLEURA=target/release/pleura
[ -x "$PLEURA" ] || cargo build --release --locked --bin pleura

mkdir -p "$OUT"/data "$OUT"/configs "$OUT"/recon "$OUT"/json
LOG=$OUT/commands.log
ROWS=$OUT/rows.txt
: > "$ROWS"
echo "# $(date -u +%FT%TZ) scripts/evaluate-posterior.sh $OUT (model $MODEL, RF $RF)" >> "$LOG"

# Runs a command, recording it in commands.log.
run() {
  echo "$*" >> "$LOG"
  "$@"
}

# Writes configs/NAME.toml: the base configuration with the KEY=VALUE overrides applied
# to its [sampler] section; fails on a key the section lacks.
make_config() {
  local name=$1
  shift
  local cfg=$OUT/configs/$name.toml
  cp "$CONFIG" "$cfg"
  local kv key val
  for kv in "$@"; do
    key=${kv%%=*}
    val=${kv#*=}
    if ! grep -q "^$key = " "$cfg"; then
      echo "evaluate-posterior: [sampler] has no setting $key" >&2
      exit 1
    fi
    sed -i "s|^$key = .*|$key = $val|" "$cfg"
  done
  echo "$cfg"
}

# Evaluates recon/NAME-SEQ.h5 into json/NAME-SEQ.json.
evaluate() {
  local name=$1 seq=$2
  run "$PLEURA" eval "$OUT/recon/$name-$seq.h5" --truth "$OUT/data/$seq.h5" --json \
    > "$OUT/json/$name-$seq.json"
}

# Whether recon/NAME-SEQ.h5 can be kept (--resume).
kept() {
  [ "$RESUME" = 1 ] && [ -f "$OUT/recon/$1-$2.h5" ]
}

sequences=()
for s in $SEEDS; do
  seq=seq-$s
  sequences+=("$seq")
  if ! { [ "$RESUME" = 1 ] && [ -f "$OUT/data/$seq.h5" ]; }; then
    case $RF in
      simus)
        # simus makes the RF again on the phantom file's scan (the image grid's, as before
        # speckle became simulate's default).
        run "$PLEURA" simulate --out "$OUT/data/$seq.pleura.h5" --frames "$FRAMES" --seed "$s" \
          --scatterers born
        run "$PYTHON" scripts/simus_rf.py "$OUT/data/$seq.pleura.h5" "$OUT/data/$seq.h5" \
          --seed "$s" --per-pixel "$SIMUS_PER_PIXEL"
        ;;
      pleura-born)
        run "$PLEURA" simulate --out "$OUT/data/$seq.h5" --frames "$FRAMES" --seed "$s" \
          --scatterers born
        ;;
      *) run "$PLEURA" simulate --out "$OUT/data/$seq.h5" --frames "$FRAMES" --seed "$s" ;;
    esac
  fi
done

baseline_limit=()
[ -n "$MAX_FRAMES" ] && baseline_limit=(--frames "$MAX_FRAMES")
for method in das tikhonov tv; do
  echo "$method|$method|-|" >> "$ROWS"
  for seq in "${sequences[@]}"; do
    kept "$method" "$seq" ||
      run "$PLEURA" reconstruct-baseline "$OUT/data/$seq.h5" --method "$method" \
        --out "$OUT/recon/$method-$seq.h5" ${baseline_limit[@]+"${baseline_limit[@]}"}
    evaluate "$method" "$seq"
  done
done

# replay_row NAME SAMPLER STEPS FRAMES SEQUENCES [KEY=VALUE...]; the overrides become part
# of the row's name (dds10-lambda0.0001), so --resume never mixes settings.
replay_row() {
  local name=$1 sampler=$2 steps=$3 frames=$4 nseq=$5
  shift 5
  local kv
  for kv in "$@"; do name+="-${kv/=/}"; done
  local cal=()
  if [ -n "${CALIBRATION:-}" ]; then
    name+="-calibrated"
    cal=(--calibration "$CALIBRATION")
  fi
  local cfg
  cfg=$(make_config "$name" "$@")
  echo "$name|$sampler|$steps|$*" >> "$ROWS"
  local i=0 seq limit=()
  [ -n "$frames" ] && limit=(--max-frames "$frames")
  for seq in "${sequences[@]}"; do
    i=$((i + 1))
    [ "$i" -le "$nseq" ] || break
    if ! kept "$name" "$seq"; then
      run "$PLEURA" replay "$OUT/data/$seq.h5" --out "$OUT/recon/$name-$seq.h5" \
        --config "$cfg" --model "$MODEL" --sampler "$sampler" --steps "$steps" \
        --samples "$SAMPLES" --device cpu ${limit[@]+"${limit[@]}"} ${cal[@]+"${cal[@]}"} \
        2> "$OUT/recon/$name-$seq.log"
    fi
    evaluate "$name" "$seq"
  done
}

nseq=${#sequences[@]}
if [ "$SKIP_DPS" = 0 ]; then
  replay_row "dps$DPS_STEPS" dps "$DPS_STEPS" "$DPS_FRAMES" "$DPS_SEQUENCES" ${SET_DPS[@]+"${SET_DPS[@]}"}
fi
for s in $DDIM_STEPS; do
  replay_row "ddim-dps$s" ddim-dps "$s" "$MAX_FRAMES" "$nseq" ${SET_DDIM[@]+"${SET_DDIM[@]}"}
done
for s in $DDS_STEPS; do
  replay_row "dds$s" dds "$s" "$MAX_FRAMES" "$nseq" ${SET_DDS[@]+"${SET_DDS[@]}"}
done

reference=
if [ "$SKIP_DPS" = 0 ]; then
  reference=dps$DPS_STEPS
  for kv in ${SET_DPS[@]+"${SET_DPS[@]}"}; do reference+="-${kv/=/}"; done
fi
python3 - "$OUT" "$reference" <<'PY' | tee "$OUT/table.md"
import json, os, sys

out, reference = sys.argv[1], sys.argv[2]
rows = [(l.rstrip("\n").split("|") + [""])[:4] for l in open(os.path.join(out, "rows.txt")) if l.strip()]
jdir = os.path.join(out, "json")


def frames_of(name):
    """(sequence, frame) -> frame metrics of every evaluated frame of a row."""
    got = {}
    for fn in sorted(os.listdir(jdir)):
        if fn.startswith(name + "-seq-") and fn.endswith(".json"):
            seq = fn[len(name) + 1 : -len(".json")]
            for f in json.load(open(os.path.join(jdir, fn)))["frames"]:
                got[(seq, f["frame"])] = f
    return got


def mean(v):
    return sum(v) / len(v) if v else None


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def table(title, keys_of):
    print(f"### {title}\n")
    print("| method | steps | frames | NFE/frame | s/frame | PSNR dB | SSIM | aeration MAE | category accuracy | published aeration MAE | published category accuracy | 95 % CI coverage | pixel coverage |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, sampler, steps, settings in rows:
        fr = frames_of(name)
        keys = keys_of(fr)
        sel = [fr[k] for k in keys if k in fr]
        if not sel:
            continue
        seqs = sorted({k[0] for k in keys if k in fr})
        nfe = [f["nfe"] for f in sel if f["nfe"] is not None]
        nfe = mean(nfe) if nfe else (0.0 if sampler in ("das", "tikhonov", "tv") else None)
        ci = [f["mean_ci_covers"] for f in sel if f["mean_ci_covers"] is not None]
        px = [f["pixel_coverage_95"] for f in sel if f["pixel_coverage_95"] is not None]
        pub_err = [f["published_aeration_abs_error"] for f in sel
                   if f.get("published_aeration_abs_error") is not None]
        pub_cat = [float(f["published_category"] == f["category_truth"]) for f in sel
                   if f.get("published_category") is not None]
        label = sampler + (f" ({settings.replace(' ', ', ')})" if settings else "")
        print("| " + " | ".join([
            label,
            steps,
            f"{len(sel)} ({len(seqs)} seq)",
            fmt(nfe, ".1f"),
            fmt(mean([f["seconds"] for f in sel if f["seconds"] is not None]), ".2f"),
            fmt(mean([f["psnr_db"] for f in sel]), ".2f"),
            fmt(mean([f["ssim"] for f in sel]), ".3f"),
            fmt(mean([f["mean_aeration_abs_error"] for f in sel]), ".3f"),
            fmt(mean([float(f["category_truth"] == f["category_recon"]) for f in sel]), ".2f"),
            fmt(mean(pub_err), ".3f"),
            fmt(mean(pub_cat), ".2f"),
            (f"{sum(ci)}/{len(ci)}" if ci else "-"),
            fmt(mean(px), ".3f"),
        ]) + " |")
    print()


table("All frames each method covers", lambda fr: sorted(fr))
if reference:
    ref_keys = sorted(frames_of(reference))
    if ref_keys:
        table(
            f"On the frames {reference} covers ({', '.join(f'{s} frame {i}' for s, i in ref_keys)})",
            lambda fr: ref_keys,
        )
PY
echo "evaluate-posterior: tables in $OUT/table.md, commands in $LOG"
