"""Which learned-inner-rate settings diverge on the 5-shot sinusoid, and when (issue 21).

    python benchmarks/rate_divergence.py --iterations 20000 --seeds 0,1,2 \\
        --variants per_parameter:reference,per_parameter:log,maml_5_steps \\
        --out benchmarks/results/rate_divergence_cpu.json

Every variant meta-trains the MAML paper's sinusoid regressor (2 x 40 ReLU) with K = 5
support points, meta-batch 25, Adam 1e-3 (constant), final-step loss, rates starting at
0.01, and reports per seed either the outer step at which the meta loss or gradient
became non-finite (``NonFiniteLossError``) or the 600-task test MSE after the trained
number of steps; and the largest per-call mean meta loss seen before (a run whose inner
loop blows up on some tasks shows losses of 1e10 and more long before it stops).

Variants are ``<rates>:<rate update>[:<inner clip>]`` with rates ``per_parameter`` (per
weight and step, 5 steps), ``meta_sgd`` (per weight, shared, 5 steps), ``meta_sgd_1``
(Meta-SGD proper, 1 step), ``lslr`` (per tensor and step, 5 steps); rate update a key of
``maml_jax.RATE_UPDATE_PRESETS`` or ``auto`` (the library default of the granularity, which
also sets the inner-gradient clip: ``maml_jax.default_inner_grad_clip``); inner clip a
number (``MetaConfig.inner_grad_clip``) or ``none`` (the default without ``auto``).
``maml_5_steps`` and ``maml_1_step`` (optionally ``:<inner clip>``) are MAML's fixed scalar
rate 0.01 for comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import numpy as np

import maml_jax as mj
from benchmarks import timing
from experiments import sinusoid
from experiments.config_lib import sinusoid_config, validate_config

RATES = {"per_parameter": ("parameter", 5), "meta_sgd": ("meta_sgd", 5),
         "meta_sgd_1": ("meta_sgd", 1), "lslr": ("layer_step", 5)}
FIXED = {"maml_5_steps": 5, "maml_1_step": 1}
ITERATIONS_PER_EPOCH = 500


def _clip(text: str | None, variant: str) -> float | None:
    if text is None or text == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise SystemExit(f"variant {variant!r}: the inner clip must be a number > 0 or 'none', "
                         f"got {text!r}")
    return value


def method(variant: str) -> dict:
    """The config keys of a variant (``<rates>:<rate update>[:<inner clip>]``, see above)."""
    rates, *rest = variant.split(":")
    if rates in FIXED and len(rest) <= 1:
        return dict(num_inner_steps=FIXED[rates], lr_granularity="scalar",
                    learn_inner_lrs=False,
                    inner_grad_clip=_clip(rest[0] if rest else None, variant))
    updates = ("auto", *mj.RATE_UPDATE_PRESETS)
    if rates not in RATES or len(rest) not in (1, 2) or rest[0] not in updates:
        raise SystemExit(f"unknown variant {variant!r}: <{'|'.join(RATES)}>:"
                         f"<{'|'.join(updates)}>[:<inner clip>] or one of {sorted(FIXED)}"
                         "[:<inner clip>]")
    granularity, steps = RATES[rates]
    update = rest[0]
    # "auto" alone: the granularity's library defaults, the inner-gradient clip included.
    clip = ("auto" if update == "auto" and len(rest) == 1
            else _clip(rest[1] if len(rest) == 2 else None, variant))
    return dict(num_inner_steps=steps, lr_granularity=granularity, learn_inner_lrs=True,
                rate_update=update, inner_grad_clip=clip)


def variant_config(variant: str, seed: int, iterations: int) -> dict:
    """The checked sinusoid config of one variant and seed (K = 5, final-step loss; test
    tasks of seed ``1000 + seed``, 600 of them with 100 query points)."""
    keys = method(variant)
    steps = keys["num_inner_steps"]
    return validate_config(sinusoid_config(
        name=variant, k_shot=5, q_query=5, msl=False, seed=seed, test_seed=1000 + seed,
        num_epochs=iterations // ITERATIONS_PER_EPOCH, iterations_per_epoch=ITERATIONS_PER_EPOCH,
        steps_per_call=250, sinusoid_eval_shots=(5,), num_inner_steps_eval=steps,
        sinusoid_eval_steps=(steps,), **keys))


def run_one(variant: str, seed: int, iterations: int) -> dict:
    cfg = variant_config(variant, seed, iterations)
    steps = cfg["num_inner_steps"]
    losses = []

    def watch(metrics, step):   # the largest mean meta loss of each host call
        losses.append(float(np.mean(metrics["loss"])))
        return mj.check_finite(metrics, step)

    row = {"variant": variant, "seed": seed, "iterations": iterations,
           "num_inner_steps": steps, "inner_grad_clip": cfg["inner_grad_clip"]}
    t0 = time.perf_counter()
    try:
        meta_params = sinusoid.train_sinusoid(cfg, check_finite=watch).meta_params
        mse = sinusoid.evaluate_sinusoid(cfg, meta_params)[5][:, steps]
        mean, ci = mj.mean_ci95(mse)
        rates = np.concatenate([np.ravel(r) for r in
                                jax.tree.leaves(jax.device_get(meta_params["inner_lrs"]))])
        row.update(diverged=False, test_mse=float(mean), test_mse_ci95=float(ci),
                   final_rates={"min": float(rates.min()), "max": float(rates.max())})
    except mj.NonFiniteLossError as err:
        text = str(err)
        row.update(diverged=True, diverged_at=int(text.split("outer step ")[1].split(";")[0]))
    finite = [v for v in losses if np.isfinite(v)]
    row.update(max_mean_meta_loss=max(finite) if finite else None,
               seconds=round(time.perf_counter() - t0, 1))
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--iterations", type=int, default=20000)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--variants", default="per_parameter:reference,per_parameter:log")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    variants = args.variants.split(",")
    if args.iterations < 1 or args.iterations % ITERATIONS_PER_EPOCH:
        raise SystemExit(f"--iterations must be a positive multiple of {ITERATIONS_PER_EPOCH} "
                         f"(whole epochs), got {args.iterations}")
    for v in variants:
        method(v)   # unknown variants fail before anything runs
    rows = []
    for v in variants:
        for seed in map(int, args.seeds.split(",")):
            rows.append(run_one(v, seed, args.iterations))
            print(json.dumps(rows[-1]), flush=True)
    report = {**timing.run_header(), "rows": rows}
    timing.write_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
