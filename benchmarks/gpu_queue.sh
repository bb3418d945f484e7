#!/usr/bin/env bash
# The open items of benchmarks/GPU_QUEUE.md as stages of device calls (< 10 minutes each).
# STAGES picks the items (in this order); every stage has its own timeout and writes its
# own files under $OUTDIR, and after each stage everything so far is bundled: the tables
# and logs into $OUTDIR/results.tar.gz, and the paper table's state (each unfinished run's
# latest checkpoint, each run's result files: experiments.table_state) into
# $OUTDIR/paper_table_state.tar.gz, so a stage that overruns loses nothing before it.
# Items done (q1-q3, 2026-12-04) are in GPU_QUEUE.md's "Done" and in git history.
#
#   STAGES="q5" bash benchmarks/gpu_queue.sh               # call 1: 150+150+80+80 = 460 s
#   STAGES="q6a q6b" bash benchmarks/gpu_queue.sh  # PyTorch peers (2 x 300 s), then
#   STAGES="q6c q6d" bash benchmarks/gpu_queue.sh  # the next call (300 + 150 s)
#   STAGES="q4" TABLE_MIN=9 bash benchmarks/gpu_queue.sh   # the paper table, resumed from
#                                                          # the committed state
#   BENCH_TINY=1 PYTHON=.venv/bin/python STAGES="q5 q4" \
#       bash benchmarks/gpu_queue.sh /tmp/gpu_queue_dry   # CPU dry run at tiny sizes
#
# Before the call (on the CPU machine): mkdir -p .omniglot && cp ../shared/data/omniglot/
# images_{background,evaluation}.zip .omniglot/   (git-ignored), and the ml_collections wheel
# into .whl (GPU_QUEUE.md); carry=[".omniglot", ".whl"]. The table's progress travels in
# the checkout (experiments/results/paper_table/state, committed). After the call, on the
# CPU machine: tar -xzf <files_at>/paper_table_state.tar.gz -C experiments/results/paper_table
# and commit it (GPU_QUEUE.md).
set -uo pipefail
cd "$(dirname "$0")/.."
OUTDIR=${1:-${OUT:-benchmarks/results/gpu_queue}}
PY=${PYTHON:-python3}
WORK=${WORK:-/tmp/maml_jax_gpu_queue}
TABLE_ROOT=${TABLE_ROOT:-runs/paper_table}   # kept between calls while the machine is warm
STATE_DIR=${STATE_DIR:-experiments/results/paper_table/state}   # committed between windows
STAGES=${STAGES:-q5}
TABLE_MIN=${TABLE_MIN:-8}
mkdir -p "$OUTDIR" "$WORK/res" "$WORK/data"
LOG="$OUTDIR/gpu_queue.log"
: > "$LOG"
export PYTHONUNBUFFERED=1 PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
T0=$SECONDS
# Packages the device image lacks (ml_collections, which the experiments' configs and
# scale_out.py import) travel as wheels in .whl (git-ignored; carry=[".whl"]; see
# GPU_QUEUE.md), installed into a private folder after the image's own site-packages.
if compgen -G ".whl/*.whl" > /dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$WORK/site" .whl/*.whl >> "$LOG" 2>&1 && export PYTHONPATH=$PYTHONPATH:$WORK/site
fi
# XLA command buffers with loops (WHILE, CONDITIONAL); the defaults leave loops out.
CMDBUF="--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,CUDNN,WHILE,CONDITIONAL"

# q4: the table's minutes (its own budget, evaluation included) + 30 s to save its state.
T_Q5B=150; T_Q5S=80; T_Q4=$(( TABLE_MIN * 60 + 30 ))
T_Q6=300; T_Q6F=150   # q6: torch.compile's first step is most of it (see q6 below)
SO=(--steps-per-call 10 --repeats 3); REP=(--repeats 10 --max-seconds 10); TINY=()
REPRO=()
if [ "${BENCH_TINY:-0}" = "1" ]; then
  T_Q5B=600; T_Q5S=600; T_Q6=900; T_Q6F=600; CMDBUF=""
  SO=(--filters 4 --steps-per-call 2 --repeats 1); REP=(--repeats 1 --max-seconds 1)
  TINY=(--tiny); REPRO=(--smoke --seeds 2 --cells omniglot_5w1s --methods mamlpp)
  TABLE_MIN=${TABLE_MIN_TINY:-4}; T_Q4=$(( TABLE_MIN * 60 + 120 ))
  STATE_DIR="$WORK/state"   # a dry run never writes the committed state
fi

bundle() {
  cat "$WORK"/res/*.md > "$OUTDIR/tables.md" 2>/dev/null
  tar -czf "$OUTDIR/results.tar.gz" -C "$WORK" res 2>/dev/null
  # The table's state: saved again here, so a q4 stage killed at its limit still leaves its
  # runs' latest checkpoints (train checkpoints at every epoch end), a few MiB per run.
  if [ -d "$TABLE_ROOT" ]; then
    "$PY" -m experiments.table_state save --root "$TABLE_ROOT" --state-dir "$STATE_DIR" \
        >> "$LOG" 2>&1
    tar -czf "$OUTDIR/paper_table_state.tar.gz" -C "$(dirname "$STATE_DIR")" \
        "$(basename "$STATE_DIR")" 2>/dev/null
  fi
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

# q5. The patches convolution (the GPU default since 2026-12-04) with the inner scan at
#     unroll 1 and 5, with XLA command buffers (q5a) and without (q5b), 20w1s and 5w1s;
#     then populations of 3 seeds (q5c 20w1s, q5d 5w1s) at the new default.
stage $T_Q5B q5a env "XLA_FLAGS=${XLA_FLAGS:+$XLA_FLAGS }$CMDBUF" "$PY" benchmarks/bench.py \
    --settings omniglot_20w1s,omniglot_5w1s --orders second --frameworks jax \
    --jax-variants patches:vmap:1,patches:vmap:5 --train-steps 10 "${TINY[@]}" "${REP[@]}" \
    --out "$WORK/res/q5a_patches_command_buffers.json"
stage $T_Q5B q5b "$PY" benchmarks/bench.py \
    --settings omniglot_20w1s,omniglot_5w1s --orders second --frameworks jax \
    --jax-variants patches:vmap:1,patches:vmap:5 --train-steps 10 "${TINY[@]}" "${REP[@]}" \
    --out "$WORK/res/q5b_patches_no_command_buffers.json"
stage $T_Q5S q5c "$PY" benchmarks/scale_out.py --ways 20 --devices 1 --seeds 3 "${SO[@]}" \
    --out "$WORK/res/q5c_population_patches_20w1s.json"
stage $T_Q5S q5d "$PY" benchmarks/scale_out.py --ways 5 --devices 1 --seeds 3 "${SO[@]}" \
    --out "$WORK/res/q5d_population_patches_5w1s.json"

# q6. The PyTorch peers on the GPU (issue 32): maml_jax against every PyTorch formulation
#     (tasks in sequence, torch.vmap over tasks, that under torch.compile with mode
#     reduce-overhead), one process, round-robin; TF32 (both frameworks' GPU default) and
#     "highest". torch.compile's first step (its compile) took 200 s per setting on the
#     2-core CPU: one setting per stage.
stage $T_Q6 q6a "$PY" benchmarks/bench.py --settings omniglot_20w1s --orders second \
    --jax-variants auto:auto:auto --train-steps 10 --precision default "${TINY[@]}" "${REP[@]}" \
    --out "$WORK/res/q6a_torch_peers_20w1s_tf32.json"
stage $T_Q6 q6b "$PY" benchmarks/bench.py --settings omniglot_5w1s --orders second \
    --jax-variants auto:auto:auto --train-steps 10 --precision default "${TINY[@]}" "${REP[@]}" \
    --out "$WORK/res/q6b_torch_peers_5w1s_tf32.json"
stage $T_Q6 q6c "$PY" benchmarks/bench.py --settings omniglot_20w1s --orders second \
    --jax-variants auto:auto:auto --train-steps 10 --precision highest "${TINY[@]}" "${REP[@]}" \
    --out "$WORK/res/q6c_torch_peers_20w1s_highest.json"
stage $T_Q6F q6d "$PY" benchmarks/bench.py --settings omniglot_20w1s,omniglot_5w1s \
    --orders first --jax-variants auto:auto:auto --torch-formulations sequential,vmap \
    --precision default "${TINY[@]}" "${REP[@]}" --out "$WORK/res/q6d_torch_peers_first.json"

# q4. The paper table, in its priority order, for what TABLE_MIN allows: restored from the
#     committed state (STATE_DIR), each run's seeds as one program or one per seed by the
#     rates measured on this GPU (experiments/results/paper_table/step_rates.json), which
#     also plan what the minutes finish (logged first), saved back into STATE_DIR.
ln -sfn "$PWD/.omniglot" "$WORK/data/omniglot"
stage $T_Q4 q4 "$PY" -m experiments.reproduce --data-dir "$WORK/data" --root "$TABLE_ROOT" \
    --state-dir "$STATE_DIR" --max-minutes "$TABLE_MIN" --eval-minutes 1 "${REPRO[@]}"
[ -f "$TABLE_ROOT/results/paper_table.md" ] && cp "$TABLE_ROOT/results/paper_table.md" \
    "$WORK/res/q4_paper_table.md"

echo "== done in $((SECONDS - T0))s; tables in $OUTDIR/tables.md" | tee -a "$LOG"
bundle
