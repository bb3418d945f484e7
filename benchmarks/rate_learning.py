"""Do learned inner rates learn at the seed's settings? Per-weight against per-tensor rates.

    python benchmarks/rate_learning.py --budgets 300,3000 --seeds 0,1,2 \\
        --out benchmarks/results/rate_learning_cpu.json

The seed's quick start, exactly: ``ModelAgnosticMetaLearning(model, inner_lr=0.01,
outer_lr=0.001, inner_steps=5, plus_plus=True)`` (MSL, learned rates, cosine meta learning
rate over 100 epochs of 500 steps), meta-batch 16, meta-trained for each budget of outer
steps and scored on 600 held-out tasks after the 5 inner steps it was trained for. Two task
families:

* ``clusters``: 5-way 2-shot classification of Gaussian clusters in 16 dimensions
  (``maml_jax.data.gaussian_clusters``; 5 query points per class in training, 15 held out),
  an MLP 16-32-32-5. Chance is 20 %.
* ``sinusoid``: the MAML paper's 5-shot sinusoid regression (5 query points in training,
  100 held out), its 1-40-40-1 MLP.

Variants are ``<granularity>:<rate update>`` (``lr_granularity`` and ``rate_update`` of the
facade; "auto" is the library default of the granularity). Each row reports the held-out
query loss (and accuracy) after 5 steps, where the rates went (min, median, max over every
rate) and whether meta-training stopped on a non-finite loss. Reduced budgets: these are
checks of the rate updates, not results to compare with a paper.
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
from maml_jax.data import gaussian_clusters

META_BATCH = 16
TEST_TASKS = 600
DEFAULT_VARIANTS = ("layer_step:auto", "parameter:auto", "meta_sgd:auto", "parameter:log",
                    "parameter:reference")


def family(name: str):
    """``(model, loss, sample(key) -> tasks, held-out tasks(seed))`` of a task family."""
    if name == "clusters":
        return (mj.MLP(hidden=(32, 32), out=5), "cross_entropy",
                lambda key: gaussian_clusters.sample_gaussian_cluster_tasks(
                    key, META_BATCH, 5, 2, 5),
                lambda seed: gaussian_clusters.gaussian_cluster_eval_tasks(
                    seed, TEST_TASKS, 5, 2, 15))
    if name == "sinusoid":
        return (mj.MLP(), "mse",
                lambda key: mj.sample_sinusoid_tasks(key, META_BATCH, 5, 5),
                lambda seed: mj.sinusoid_eval_tasks(seed, TEST_TASKS, 5, 100))
    raise SystemExit(f"unknown family {name!r}: clusters or sinusoid")


def parse_variant(variant: str) -> tuple[str, str]:
    granularity, _, update = variant.partition(":")
    updates = ("auto", *mj.RATE_UPDATE_PRESETS)
    if granularity not in mj.GRANULARITIES or update not in updates:
        raise SystemExit(f"unknown variant {variant!r}: <{'|'.join(mj.GRANULARITIES)}>:"
                         f"<{'|'.join(updates)}>")
    return granularity, update


def run_one(family_name: str, variant: str, seed: int, budget: int) -> dict:
    model, loss, sample, held_out = family(family_name)
    granularity, update = parse_variant(variant)
    # The seed's quick start; the granularity and its rate update are the only change.
    maml = mj.ModelAgnosticMetaLearning(model, inner_lr=0.01, outer_lr=0.001, inner_steps=5,
                                        plus_plus=True, loss=loss, seed=seed,
                                        lr_granularity=granularity, rate_update=update)
    row = {"family": family_name, "variant": variant, "rate_update": maml.rate_update,
           "inner_grad_clip": maml.config.inner_grad_clip, "seed": seed, "budget": budget}
    key = jax.random.PRNGKey(1000 + seed)
    t0 = time.perf_counter()
    try:
        for step in range(budget):
            (xs, ys), (xq, yq) = sample(jax.random.fold_in(key, step))
            maml.meta_train_step(xs, ys, xq, yq)
    except mj.NonFiniteLossError as err:
        row.update(diverged=True, diverged_at=maml.step, error=str(err)[:200])
        return row
    seconds = time.perf_counter() - t0
    (xs, ys), (xq, yq) = held_out(2000 + seed)
    ev = maml.evaluate(xs, ys, xq, yq)
    rates = np.concatenate([np.ravel(r) for r in jax.tree.leaves(jax.device_get(maml.inner_lrs))])
    row.update(diverged=False, seconds=round(seconds, 1),
               test_loss=float(ev["loss"][:, -1].mean()),
               test_loss_before=float(ev["loss"][:, 0].mean()),
               rates={"min": float(rates.min()), "median": float(np.median(rates)),
                      "max": float(rates.max()),
                      "moved_over_1pct": float(np.mean(np.abs(rates / 0.01 - 1) > 0.01))})
    if "accuracy" in ev:
        row["test_accuracy"] = float(ev["accuracy"][:, -1].mean())
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--families", default="clusters,sinusoid")
    p.add_argument("--variants", default=",".join(DEFAULT_VARIANTS))
    p.add_argument("--budgets", default="300,3000")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    families = args.families.split(",")
    variants = args.variants.split(",")
    for name in families:
        family(name)
    for v in variants:
        parse_variant(v)   # unknown names fail before anything runs
    rows = []
    for name in families:
        for budget in map(int, args.budgets.split(",")):
            for v in variants:
                for seed in map(int, args.seeds.split(",")):
                    rows.append(run_one(name, v, seed, budget))
                    print(json.dumps(rows[-1]), flush=True)
    report = {**timing.run_header(),
              "settings": {"inner_lr": 0.01, "outer_lr": 0.001, "inner_steps": 5,
                           "plus_plus": True, "meta_batch": META_BATCH,
                           "test_tasks": TEST_TASKS},
              "rows": rows}
    timing.write_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
