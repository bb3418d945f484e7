"""First-order MAML's meta-gradient two ways, timed in one process: the library's closed form
(one forward scan of support and query gradients, ``maml.first_order_meta_gradient``) and
reverse mode through the inner loop with its gradients stopped (the formulation before
2026-12-06, ``core.task_loss(first_order=True)`` under ``jax.value_and_grad``).

    python benchmarks/first_order_forms.py --settings omniglot_5w1s,omniglot_20w1s \\
        --out benchmarks/results/cpu_first_order_forms.json

The MAML++ step of ``jax_setup`` (64 filters, meta-batch 8, 5 inner steps, MSL, per-layer
per-step rates, per-step BN), random tasks of the real shapes; each form jitted once
(compile timed apart), then ``--repeats`` rounds that time one call of each after an untimed
one, results waited for. Reports the medians and the largest difference of the two
meta-gradients (params and rates) relative to the meta-gradient's largest entry.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [_HERE, os.path.dirname(_HERE)]

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import jax_setup  # noqa: E402
import timing  # noqa: E402

from maml_jax import core, meta  # noqa: E402


def stopped_loop_meta_gradient(meta_params, tasks, *, loss_fn, config, msl):
    """Reverse mode through the inner loop, its gradients stopped (the earlier form)."""
    n = config.num_inner_steps
    weights = core.msl_weights(0, n, config.msl_epochs) if msl else core.final_step_weights(n)

    def mean_loss(mp):
        per_task = jax.vmap(lambda s, q: core.task_loss(
            loss_fn, mp["params"], mp["inner_lrs"], s, q, num_steps=n, step_weights=weights,
            first_order=True, grad_clip=config.inner_grad_clip, unroll=min(n, 5))[0])
        return jnp.mean(per_task(*tasks))

    return jax.value_and_grad(mean_loss)(meta_params)


def run(name: str, repeats: int) -> dict:
    s = dataclasses.replace(jax_setup.SETTINGS[name], first_order=True, msl=True)
    _, state, _, kw = jax_setup.build(s)
    tasks = jax.device_put(jax_setup.make_tasks(s))
    forms = {
        "closed form": jax.jit(lambda mp, t: meta.meta_gradient(
            mp, t, step=0, loss_fn=kw["loss_fn"], config=kw["config"], phase=(True, True))[:2]),
        "stopped loop": jax.jit(lambda mp, t: stopped_loop_meta_gradient(
            mp, t, loss_fn=kw["loss_fn"], config=kw["config"], msl=True)),
    }
    mp = state.meta_params
    compile_s, outs = {}, {}
    for form, fn in forms.items():
        outs[form], compile_s[form] = timing.timed(fn, mp, tasks)
    # Relative to the largest entry of the whole meta-gradient: the convolutions' biases,
    # followed by batch norm, have gradients of rounding size only.
    ref, new = outs["stopped loop"][1], outs["closed form"][1]
    scale = max(float(jnp.max(jnp.abs(a))) for a in jax.tree.leaves(ref))
    rel = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))) / scale, ref, new)
    times = {form: [] for form in forms}
    for _ in range(repeats):
        for form, fn in forms.items():
            timing.timed(fn, mp, tasks)            # untimed, as bench.py's turns
            times[form].append(timing.timed(fn, mp, tasks)[1])
    return {"setting": f"{name} first-order", "compile_s": compile_s,
            "median_ms": {f: 1e3 * statistics.median(t) for f, t in times.items()},
            "min_ms": {f: 1e3 * min(t) for f, t in times.items()},
            "repeats": repeats, "max_diff_over_largest_entry": max(jax.tree.leaves(rel))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--settings", default="omniglot_5w1s")
    p.add_argument("--repeats", type=int, default=8)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    report = {**timing.run_header(),
              "rows": [run(name, args.repeats) for name in args.settings.split(",")]}
    for row in report["rows"]:
        print(json.dumps(row))
    timing.write_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
