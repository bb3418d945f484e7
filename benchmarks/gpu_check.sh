#!/usr/bin/env bash
# The GPU benchmark table, prepared for an H100/H200 session (jax/flax/optax/chex/torch
# preinstalled, no package registry). Total budget < 10 minutes (stage timeouts sum to 550 s): every stage has its own
# timeout and writes its own file, so a slow stage does not lose the others' results. The
# gradient check runs first (benchmarks/grad_check.py).
#
#   bash benchmarks/gpu_check.sh [OUTDIR]      # default: $OUT, else benchmarks/results/gpu
#   BENCH_TINY=1 bash benchmarks/gpu_check.sh /tmp/gpu_dry   # CPU dry run (tiny sizes)
#
# PYTHON selects the interpreter (default: python3 on the GPU machine).
set -uo pipefail
cd "$(dirname "$0")/.."
OUTDIR=${1:-${OUT:-benchmarks/results/gpu}}
PY=${PYTHON:-python3}
mkdir -p "$OUTDIR"
LOG="$OUTDIR/gpu_check.log"
: > "$LOG"

TINY=()
REP=(--repeats 10 --max-seconds 20)
T_GRAD=150; T_MAIN=140; T_FO=40; T_MINI=50; T_REMAT=45; T_COST=55; T_SEEDS=70
if [ "${BENCH_TINY:-0}" = "1" ]; then
  TINY=(--tiny); REP=(--repeats 1 --max-seconds 1)
  T_GRAD=400; T_MAIN=400; T_FO=200; T_MINI=200; T_REMAT=200; T_COST=300; T_SEEDS=400
fi

run() {  # run SECONDS NAME ARGS...
  local t=$1 name=$2; shift 2
  echo "== $name: $*" | tee -a "$LOG"
  local start=$SECONDS
  timeout "$t" "$PY" benchmarks/bench.py "$@" "${TINY[@]}" "${REP[@]}" \
      --out "$OUTDIR/$name.json" >> "$LOG" 2>&1
  echo "== $name: rc=$? in $((SECONDS - start))s" | tee -a "$LOG"
}

{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
  "$PY" -c "import jax, flax, optax; print('jax', jax.__version__, jax.devices())"
  "$PY" -c "import torch; print('torch', torch.__version__, torch.cuda.is_available())" 2>&1
} >> "$LOG" 2>&1

# 0. Correctness first: the default step's full-size meta-gradient (float32 at "highest"
#    precision and float64) against the PyTorch float64 reference and float64 finite
#    differences, plus the TF32 default precision reported beside it. A fast wrong step is
#    not a result: a failed check is printed at the top of every table below.
echo "== grad_check" | tee -a "$LOG"
start=$SECONDS
if [ "${BENCH_TINY:-0}" = "1" ]; then GC_ARGS=(--no-fd --dtypes float32); else GC_ARGS=(); fi
timeout "$T_GRAD" "$PY" benchmarks/grad_check.py --variants default \
    "${GC_ARGS[@]}" --out "$OUTDIR/01_grad_check.json" >> "$LOG" 2>&1
GC_RC=$?
echo "== grad_check: rc=$GC_RC in $((SECONDS - start))s" | tee -a "$LOG"
if [ "$GC_RC" != "0" ]; then
  echo "**GRADIENT CHECK FAILED (rc=$GC_RC): the steps timed below compute a wrong meta-gradient; see 01_grad_check.md**" \
      > "$OUTDIR/00_gradient_check_failed.md"
fi

# 1. The main table: 20w1s and 5w1s, second order, MSL; JAX defaults (vmap + xla conv on
#    GPU), patches conv under vmap, full scan unroll, jit_train_steps (10 steps per call);
#    PyTorch with tasks one after another (the reference).
run $T_MAIN gpu_main --settings omniglot_20w1s,omniglot_5w1s --orders second \
    --jax-variants auto:auto:auto,patches:vmap:1,xla:vmap:true --train-steps 10
# 2. First order, 20w1s.
run $T_FO gpu_first_order --settings omniglot_20w1s --orders first --jax-variants auto:auto:auto
# 3. mini-ImageNet 5w1s (84x84x3, 48 filters, 15 queries, meta-batch 2), second order.
run $T_MINI gpu_miniimagenet --settings miniimagenet_5w1s --orders second --jax-variants auto:auto:auto
# 4. Memory vs inner steps, remat off/on (JAX only; device peak bytes are process-wide).
run $T_REMAT gpu_remat --settings omniglot_5w1s --orders second --frameworks jax \
    --jax-variants auto:auto:auto --scaling remat --scaling-values 5,10

# 5. MAML vs MAML++ step cost (the "~30-50 % slower" claim), 20w1s, same process.
echo "== cost_maml_vs_mamlpp" | tee -a "$LOG"
start=$SECONDS
if [ "${BENCH_TINY:-0}" = "1" ]; then COST_ARGS=(--tiny --repeats 2); else COST_ARGS=(--repeats 20); fi
timeout "$T_COST" "$PY" benchmarks/cost_maml_vs_mamlpp.py --settings omniglot_20w1s \
    "${COST_ARGS[@]}" --out "$OUTDIR/gpu_cost_maml_vs_mamlpp.json" >> "$LOG" 2>&1
echo "== cost_maml_vs_mamlpp: rc=$? in $((SECONDS - start))s" | tee -a "$LOG"

# 6. Seeds as a batch axis: meta-steps/s per seed for a population of S = 1, 3, 8 on one
#    GPU (benchmarks/scale_out.py; one subprocess per point).
echo "== scale_out_seeds" | tee -a "$LOG"
start=$SECONDS
if [ "${BENCH_TINY:-0}" = "1" ]; then SO_ARGS=(--filters 4 --steps-per-call 2 --repeats 1); else SO_ARGS=(--steps-per-call 10 --repeats 3); fi
timeout "$T_SEEDS" "$PY" benchmarks/scale_out.py --devices 1 --seeds 1,3,8 "${SO_ARGS[@]}" \
    --out "$OUTDIR/gpu_scale_out_seeds.json" >> "$LOG" 2>&1
echo "== scale_out_seeds: rc=$? in $((SECONDS - start))s" | tee -a "$LOG"

cat "$OUTDIR"/*.md > "$OUTDIR/gpu_tables.md" 2>/dev/null   # 00_*, 01_grad_check first
echo "tables in $OUTDIR/gpu_tables.md" | tee -a "$LOG"
