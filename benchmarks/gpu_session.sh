#!/usr/bin/env bash
# One device call (< 10 minutes) for a session that has ~15 minutes of H100/H200 time in all:
# the gradient check, the benchmark table (JAX and PyTorch in the same process), a MAML++
# Omniglot 5-way 1-shot training run sized to what is left and its evaluation on the 600
# fixed test tasks, a profile of the 20-way 1-shot step, and the MAML vs MAML++ step cost.
# Stage timeouts sum to 565 s (TRAIN_MIN=2.5); each stage writes its own files, and after every stage all
# results are re-bundled into $OUT/results.tar.gz (the device returns at most 8 files), so a
# stage that overruns loses nothing before it.
#
#   bash benchmarks/gpu_session.sh [OUTDIR]        # needs the Omniglot zips in .omniglot/
#   STAGES="bench train evaluate" BENCH_VARIANTS=patches:vmap:auto,xla:map:auto,auto:auto:auto \
#     BENCH_FRAMEWORKS=jax TRAIN_MIN=3.3 bash benchmarks/gpu_session.sh   # a second, shorter call
#   BENCH_TINY=1 PYTHON=.venv/bin/python bash benchmarks/gpu_session.sh /tmp/gpu_dry   # CPU dry run
#
# Before the call (on the CPU machine): mkdir -p .omniglot && cp ../shared/data/omniglot/
# images_{background,evaluation}.zip .omniglot/   (git-ignored; pass carry=[".omniglot"]).
set -uo pipefail
cd "$(dirname "$0")/.."
OUTDIR=${1:-${OUT:-benchmarks/results/gpu_session}}
PY=${PYTHON:-python3}
WORK=${WORK:-/tmp/maml_jax_gpu_session}
mkdir -p "$OUTDIR" "$WORK/res"
LOG="$OUTDIR/session.log"
: > "$LOG"
export PYTHONUNBUFFERED=1 PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
T0=$SECONDS

STAGES=${STAGES:-grad bench train evaluate profile cost}
BENCH_VARIANTS=${BENCH_VARIANTS:-auto:auto:auto}   # bench.py --jax-variants; the first also x10/call
BENCH_FRAMEWORKS=${BENCH_FRAMEWORKS:-jax,torch}
TRAIN_MIN=${TRAIN_MIN:-2.5}; OVERHEAD_S=${OVERHEAD_S:-60}   # training's wall-clock limit; compiles inside it
T_GRAD=90; T_BENCH=130; T_EVAL=50; T_PROF=40; T_COST=45
T_TRAIN=$(awk -v m="$TRAIN_MIN" 'BEGIN { printf "%d", m * 60 + 60 }')   # + start, data, last save
REP=(--repeats 10 --max-seconds 10); TINY=(); GC=(--no-fd); CFG_SET=(); EVAL=()
if [ "${BENCH_TINY:-0}" = "1" ]; then
  T_GRAD=400; T_BENCH=400; T_TRAIN=400; T_EVAL=300; T_PROF=200; T_COST=300
  TRAIN_MIN=3; OVERHEAD_S=60
  REP=(--repeats 1 --max-seconds 1); TINY=(--tiny); GC=(--no-fd --dtypes float32)
  CFG_SET=(--config.num_filters=4 --config.iterations_per_epoch=20 --config.steps_per_call=10
           --config.num_val_tasks=20 --config.num_test_tasks=20)
  EVAL=(--num-tasks 20)
fi

bundle() {  # all results so far -> $OUTDIR/results.tar.gz and $OUTDIR/tables.md
  cat "$WORK"/res/*.md > "$OUTDIR/tables.md" 2>/dev/null
  tar -czf "$OUTDIR/results.tar.gz" -C "$WORK" --exclude='run/checkpoints' res run 2>/dev/null
  echo "== t=$((SECONDS - T0))s bundled" >> "$LOG"
}

stage() {  # stage SECONDS NAME COMMAND...   (skipped unless NAME is in $STAGES)
  local t=$1 name=$2; shift 2
  case " $STAGES " in *" $name "*) ;; *) return 0 ;; esac
  echo "== $name (limit ${t}s, t=$((SECONDS - T0))s): $*" | tee -a "$LOG"
  local start=$SECONDS
  timeout "$t" "$@" >> "$LOG" 2>&1
  local rc=$?
  echo "== $name: rc=$rc in $((SECONDS - start))s" | tee -a "$LOG"
  bundle
  return $rc
}

{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv \
      2>/dev/null || echo "no nvidia-smi"
  "$PY" -c "import jax, jaxlib, flax, optax, chex, numpy; print('jax', jax.__version__, 'jaxlib', jaxlib.__version__, 'flax', flax.__version__, 'optax', optax.__version__, 'chex', chex.__version__, 'numpy', numpy.__version__, jax.devices())"
  "$PY" -c "import torch; print('torch', torch.__version__, torch.cuda.is_available())"
  "$PY" -c "import orbax.checkpoint as o, matplotlib, PIL; print('orbax', o.__version__ if hasattr(o, '__version__') else '?', 'matplotlib', matplotlib.__version__, 'pillow', PIL.__version__)"
  "$PY" -c "import tensorboardX" 2>&1 | tail -1
} >> "$LOG" 2>&1
cp "$LOG" "$WORK/res/00_environment.log"

# 1. Correctness first: the default step's full-size meta-gradient against the PyTorch float64
#    reference, float32 at "highest" precision (judged) and at the default TF32 (reported).
stage $T_GRAD grad "$PY" benchmarks/grad_check.py --variants default "${GC[@]}" \
    --out "$WORK/res/01_grad_check.json"
GC_RC=$?
if [ -f "$WORK/res/01_grad_check.json" ] && [ "$GC_RC" != 0 ]; then
  echo "**GRADIENT CHECK FAILED OR DID NOT FINISH: the numbers below are not results**" \
      > "$WORK/res/00_gradient_check_failed.md"
fi

# 2. The table: 20w1s and 5w1s, second order, MSL; maml_jax defaults (one step per call and
#    10 per call) and the PyTorch sequential step, same process.
stage $T_BENCH bench "$PY" benchmarks/bench.py --settings omniglot_20w1s,omniglot_5w1s \
    --orders second --jax-variants "$BENCH_VARIANTS" --frameworks "$BENCH_FRAMEWORKS" \
    --train-steps 10 "${TINY[@]}" "${REP[@]}" --out "$WORK/res/02_bench.json"

# 3. MAML++ Omniglot 5w1s with the fastest benchmarked JAX variant (one step per call, 5w1s):
#    as many epochs of 500 iterations as its rate fits into TRAIN_MIN (the cosine schedule and
#    the 10 % MSL phase follow them), then the evaluation (best checkpoint and top-5
#    ensemble, 600 fixed test tasks).
read -r EPOCHS VARIANT_SET <<< "$("$PY" - "$WORK/res/02_bench.json" "$TRAIN_MIN" "$OVERHEAD_S" <<'EOF'
import json, math, sys
try:
    rows = [r for r in json.load(open(sys.argv[1]))["rows"]
            if r["setting"].startswith("omniglot_5w1s") and r["framework"].startswith("jax ")
            and "/call" not in r["framework"]]
    best = max(rows, key=lambda r: r["meta_steps_per_s"])
    rate, variant = best["meta_steps_per_s"], best["framework"].split()[1]
except Exception:  # no bench: the config's own schedule and defaults; the time limit holds
    rate, variant = None, "auto:auto:auto"
conv, batching = variant.split(":")[:2]
sets = ",".join(f"{k}={v}" for k, v in (("conv_impl", conv), ("task_batching", batching))
                if v != "auto")
budget = float(sys.argv[2]) * 60 - float(sys.argv[3])
print(20 if not rate else max(2, min(100, math.floor(budget / (500 / rate + 2.0)))), sets or "-")
EOF
)"
MSL=$(( (EPOCHS + 5) / 10 )); [ "$MSL" -lt 1 ] && MSL=1
VSET=()
if [ "$VARIANT_SET" != "-" ]; then
  IFS=, read -ra KV <<< "$VARIANT_SET"
  for kv in "${KV[@]}"; do VSET+=("--config.$kv"); done
fi
echo "== training schedule: $EPOCHS epochs, MSL over $MSL; variant: $VARIANT_SET" | tee -a "$LOG"
rm -rf "$WORK/run"
stage $T_TRAIN train "$PY" -m experiments.train \
    --config=experiments/configs/omniglot_5w1s_mamlpp.py:gpu_short --workdir "$WORK/run" \
    --data-dir .omniglot --no-progress --max-minutes "$TRAIN_MIN" \
    --config.num_epochs=$EPOCHS --config.msl_epochs=$MSL "${VSET[@]}" "${CFG_SET[@]}"
stage $T_EVAL evaluate "$PY" -m experiments.evaluate --workdir "$WORK/run" --data-dir .omniglot \
    "${EVAL[@]}"

# 4. Where the 20w1s step's time goes (jax.profiler trace reduced to a table).
stage $T_PROF profile "$PY" benchmarks/profile_step.py --setting omniglot_20w1s "${TINY[@]}" \
    --out "$WORK/res/04_profile_20w1s.json"

# 5. MAML (final-step loss, fixed scalar alpha, shared BN) vs MAML++ step cost, 20w1s.
if [ "${BENCH_TINY:-0}" = "1" ]; then COST=(--tiny --repeats 2); else COST=(--repeats 20); fi
stage $T_COST cost "$PY" benchmarks/cost_maml_vs_mamlpp.py --settings omniglot_20w1s \
    --rows MAML,MAML++ "${COST[@]}" --out "$WORK/res/05_cost_maml_vs_mamlpp.json"

echo "== done in $((SECONDS - T0))s; tables in $OUTDIR/tables.md" | tee -a "$LOG"
bundle
