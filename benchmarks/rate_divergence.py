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
import datetime
import json
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import numpy as np

import maml_jax as mj
from experiments import sinusoid

RATES = {"per_parameter": ("parameter", 5), "meta_sgd": ("meta_sgd", 5),
         "meta_sgd_1": ("meta_sgd", 1), "lslr": ("layer_step", 5)}
FIXED = {"maml_5_steps": 5, "maml_1_step": 1}


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


def method(variant: str) -> sinusoid.MethodConfig:
    rates, *rest = variant.split(":")
    if rates in FIXED and len(rest) <= 1:
        return sinusoid.MethodConfig(name=variant, num_inner_steps=FIXED[rates],
                                     inner_lr=0.01, granularity="scalar",
                                     learn_inner_lrs=False, msl=False,
                                     inner_grad_clip=_clip(rest[0] if rest else None, variant))
    updates = ("auto", *mj.RATE_UPDATE_PRESETS)
    if rates not in RATES or len(rest) not in (1, 2) or rest[0] not in updates:
        raise SystemExit(f"unknown variant {variant!r}: <{'|'.join(RATES)}>:"
                         f"<{'|'.join(updates)}>[:<inner clip>] or one of {sorted(FIXED)}"
                         "[:<inner clip>]")
    granularity, steps = RATES[rates]
    update = rest[0]
    clip = (mj.default_inner_grad_clip(granularity) if update == "auto" and len(rest) == 1
            else _clip(rest[1] if len(rest) == 2 else None, variant))
    return sinusoid.MethodConfig(name=variant, num_inner_steps=steps, inner_lr=0.01,
                                 granularity=granularity, learn_inner_lrs=True, msl=False,
                                 inner_grad_clip=clip,
                                 **mj.rate_update_preset(update, granularity))


def run_one(variant: str, seed: int, iterations: int) -> dict:
    m = method(variant)
    cfg = sinusoid.SinusoidConfig(methods=(m,), iterations=iterations,
                                  iterations_per_epoch=500, k_train=5, seed=seed,
                                  steps_per_call=250, eval_shots=(5,),
                                  eval_steps=(m.num_inner_steps,))
    losses = []
    real_check = mj.check_finite

    def watch(metrics, step):   # the largest mean meta loss of each host call
        losses.append(float(np.mean(metrics["loss"])))
        return real_check(metrics, step)

    row = {"variant": variant, "seed": seed, "iterations": iterations,
           "num_inner_steps": m.num_inner_steps, "inner_grad_clip": m.inner_grad_clip}
    t0 = time.perf_counter()
    sinusoid.mj.check_finite = watch
    try:
        meta_params, _, _ = sinusoid.train_method(cfg, m, progress=False)
        mse = sinusoid.evaluate_method(cfg, meta_params,
                                       m.inner_grad_clip)[5][:, m.num_inner_steps]
        mean, ci = mj.mean_ci95(mse)
        rates = np.concatenate([np.ravel(r) for r in
                                jax.tree.leaves(jax.device_get(meta_params["inner_lrs"]))])
        row.update(diverged=False, test_mse=float(mean), test_mse_ci95=float(ci),
                   final_rates={"min": float(rates.min()), "max": float(rates.max())})
    except mj.NonFiniteLossError as err:
        text = str(err)
        row.update(diverged=True, diverged_at=int(text.split("outer step ")[1].split(";")[0]))
    finally:
        sinusoid.mj.check_finite = real_check
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
    for v in variants:
        method(v)   # unknown variants fail before anything runs
    rows = []
    for v in variants:
        for seed in map(int, args.seeds.split(",")):
            rows.append(run_one(v, seed, args.iterations))
            print(json.dumps(rows[-1]), flush=True)
    report = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "argv": sys.argv, "host": platform.node(), "processor": platform.processor(),
              "jax": jax.__version__, "rows": rows}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
