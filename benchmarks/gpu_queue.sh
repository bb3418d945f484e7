#!/usr/bin/env bash
# The items of benchmarks/GPU_QUEUE.md as stages of one device call (< 10 minutes each).
# STAGES picks the items (in this order); every stage has its own timeout and writes its
# own files under $OUTDIR, and after each stage everything so far is bundled into
# $OUTDIR/results.tar.gz (the paper-table runs with their checkpoints, so a later session
# can carry them back and resume), so a stage that overruns loses nothing before it.
#
#   STAGES="q1 q2" bash benchmarks/gpu_queue.sh            # call 1: 180+150+110+110 = 550 s
#   STAGES="q4" TABLE_MIN=8 bash benchmarks/gpu_queue.sh   # call 2: the paper table, 8 min
#   STAGES="q3" bash benchmarks/gpu_queue.sh               # TF32 vs highest, ~6 min
#   BENCH_TINY=1 PYTHON=.venv/bin/python STAGES="q1 q2 q3 q4" \
#       bash benchmarks/gpu_queue.sh /tmp/gpu_queue_dry   # CPU dry run at tiny sizes
#
# Before the call (on the CPU machine): mkdir -p .omniglot && cp ../shared/data/omniglot/
# images_{background,evaluation}.zip .omniglot/   (git-ignored; carry=[".omniglot"]; for q4
# also carry runs/paper_table if an earlier session's table runs are there to resume).
set -uo pipefail
cd "$(dirname "$0")/.."
OUTDIR=${1:-${OUT:-benchmarks/results/gpu_queue}}
PY=${PYTHON:-python3}
WORK=${WORK:-/tmp/maml_jax_gpu_queue}
TABLE_ROOT=${TABLE_ROOT:-runs/paper_table}   # kept between calls while the machine is warm
STAGES=${STAGES:-q1 q2}
TABLE_MIN=${TABLE_MIN:-8}
mkdir -p "$OUTDIR" "$WORK/res" "$WORK/data"
LOG="$OUTDIR/gpu_queue.log"
: > "$LOG"
export PYTHONUNBUFFERED=1 PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
T0=$SECONDS
# XLA command buffers with loops (WHILE, CONDITIONAL); the defaults leave loops out.
# CMDBUF= (empty) runs q2c without them, for the comparison.
CMDBUF=${CMDBUF-"--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,CUDNN,WHILE,CONDITIONAL"}

T_Q1=180; T_Q2A=150; T_Q2B=110; T_Q2C=110; T_Q3=170; T_Q4=$(( TABLE_MIN * 60 + 60 ))
SO=(--steps-per-call 10 --repeats 3); REP=(--repeats 10 --max-seconds 10); TINY=()
GC=(--no-fd); TRAIN_SET=(); EVAL=(); REPRO=()
if [ "${BENCH_TINY:-0}" = "1" ]; then
  T_Q1=600; T_Q2A=600; T_Q2B=600; T_Q2C=600; T_Q3=600; T_Q4=900; CMDBUF=""
  SO=(--filters 4 --steps-per-call 2 --repeats 1); REP=(--repeats 1 --max-seconds 1)
  TINY=(--tiny); GC=(--no-fd --dtypes float32)
  TRAIN_SET=(--config.num_filters=4 --config.iterations_per_epoch=20 --config.steps_per_call=10
             --config.num_val_tasks=20 --config.num_test_tasks=20 --config.num_epochs=2)
  EVAL=(--num-tasks 20); REPRO=(--smoke --seeds 2 --cells omniglot_5w1s --methods mamlpp)
  TABLE_MIN=${TABLE_MIN_TINY:-4}; T_Q4=$(( TABLE_MIN * 60 + 120 ))
fi

bundle() {
  cat "$WORK"/res/*.md > "$OUTDIR/tables.md" 2>/dev/null
  local table=()
  [ -d "$TABLE_ROOT" ] && table=(-C "$(cd "$(dirname "$TABLE_ROOT")" && pwd)" "$(basename "$TABLE_ROOT")")
  tar -czf "$OUTDIR/results.tar.gz" -C "$WORK" res "${table[@]}" 2>/dev/null
  echo "== t=$((SECONDS - T0))s bundled" >> "$LOG"
}

stage() {  # stage SECONDS NAME COMMAND...   (skipped unless NAME's item is in $STAGES)
  local t=$1 name=$2; shift 2
  case " $STAGES " in *" ${name:0:2} "*|*" $name "*) ;; *) return 0 ;; esac
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
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null \
      || echo "no nvidia-smi"
  "$PY" -c "import jax, jaxlib, flax, optax; print('jax', jax.__version__, 'jaxlib', jaxlib.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())"
  "$PY" -c "import torch; print('torch', torch.__version__, torch.cuda.is_available())" 2>&1
} >> "$LOG" 2>&1
cp "$LOG" "$WORK/res/00_environment.log"

# q1. The patches convolution's meta-gradient on the GPU, beside the default (xla): float32
#     at "highest" precision (judged, 1e-3) and at the default TF32 (reported), float64;
#     against the PyTorch float64 reference on the check instance.
stage $T_Q1 q1 "$PY" benchmarks/grad_check.py \
    --variants default,patches:vmap:5:0:select,patches:vmap:1:0:select "${GC[@]}" \
    --out "$WORK/res/q1_grad_check_patches_gpu.json"

# q2. Seed-steps/s of populations S = 1, 3, 8 (20w1s, then 5w1s), then XLA command buffers
#     with loops, inner scan unrolled (true) or not (1), 20w1s, JAX only.
stage $T_Q2A q2a "$PY" benchmarks/scale_out.py --ways 20 --devices 1 --seeds 1,3,8 "${SO[@]}" \
    --out "$WORK/res/q2a_population_20w1s.json"
stage $T_Q2B q2b "$PY" benchmarks/scale_out.py --ways 5 --devices 1 --seeds 1,3,8 "${SO[@]}" \
    --out "$WORK/res/q2b_population_5w1s.json"
CB_ENV=(env)
[ -n "$CMDBUF" ] && CB_ENV=(env "XLA_FLAGS=${XLA_FLAGS:+$XLA_FLAGS }$CMDBUF")
stage $T_Q2C q2c "${CB_ENV[@]}" "$PY" benchmarks/bench.py \
    --settings omniglot_20w1s --orders second --frameworks jax \
    --jax-variants auto:vmap:1,auto:vmap:true --train-steps 10 "${TINY[@]}" "${REP[@]}" \
    --out "$WORK/res/q2c_command_buffers_20w1s.json"

# q3. TF32 (the GPU default) against "highest": a short MAML++ 5w1s run at each, evaluated.
for prec in highest default; do
  if [ $prec = highest ]; then PREC=(env JAX_DEFAULT_MATMUL_PRECISION=highest)
  else PREC=(env -u JAX_DEFAULT_MATMUL_PRECISION); fi
  stage $(( T_Q3 / 2 )) q3 "${PREC[@]}" "$PY" -m experiments.train --config=experiments/configs/omniglot_5w1s_mamlpp.py:gpu_short \
      --workdir "$WORK/res/q3_$prec" --data-dir .omniglot --no-progress --max-minutes 1.2 \
      --config.num_epochs=4 --config.msl_epochs=1 "${TRAIN_SET[@]}"
  stage 40 q3 "$PY" -m experiments.evaluate --workdir "$WORK/res/q3_$prec" \
      --data-dir .omniglot "${EVAL[@]}"
done

# q4. The paper table, in its priority order, for what TABLE_MIN allows (resumes TABLE_ROOT).
ln -sfn "$PWD/.omniglot" "$WORK/data/omniglot"
stage $T_Q4 q4 "$PY" -m experiments.reproduce --data-dir "$WORK/data" --root "$TABLE_ROOT" \
    --max-minutes "$TABLE_MIN" --eval-minutes 1.5 "${REPRO[@]}"
[ -f "$TABLE_ROOT/results/paper_table.md" ] && cp "$TABLE_ROOT/results/paper_table.md" \
    "$WORK/res/q4_paper_table.md"

echo "== done in $((SECONDS - T0))s; tables in $OUTDIR/tables.md" | tee -a "$LOG"
bundle
