"""What owning the state's arrays costs: a donating outer step against one that keeps its
input (the facade's), and ``init_meta_state``'s one copy, on the real Conv4.

    python benchmarks/donation_cost.py --setting omniglot_5w1s --repeats 20 \\
        --out benchmarks/results/donation_cost_cpu.json

The two steps are the same ``outer_step`` (MAML++ Conv4, 64 filters, meta-batch 8, 5 inner
steps, second order, the CPU defaults) jitted with and without ``donate_argnames=("state",)``:
each compiled apart (compile seconds reported apart), then timed in turns, one step of each
per round, results waited for. Their losses are compared too (they must be equal).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax

from benchmarks import jax_setup, timing
from maml_jax import meta


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--setting", default="omniglot_5w1s", choices=sorted(jax_setup.SETTINGS))
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    s = jax_setup.SETTINGS[args.setting]
    _, state, _, kw = jax_setup.build(s)
    tasks = jax.device_put(jax_setup.make_tasks(s))
    static = dict(kw, phase=(s.first_order, s.msl))
    steps = {"donating (jit_outer_step)": meta.jit_outer_step,
             "keeping its input (the facade's)": jax.jit(
                 meta.outer_step, static_argnames=meta.OUTER_STEP_STATIC)}
    compiled, compile_s, states, times, losses = {}, {}, {}, {}, {}
    for name, jitted in steps.items():
        compiled[name], compile_s[name] = timing.compile_timed(jitted, state, tasks, **static)
        states[name] = jax.tree.map(lambda a: a.copy(), state)
        times[name], losses[name] = [], []
    # init_meta_state's copy of the caller's arrays: once per run.
    params, lrs = state.meta_params["params"], state.meta_params["inner_lrs"]
    _, init_s = timing.timed(meta.init_meta_state, params, lrs, kw["optimizer"], state.rng,
                             state.model_state)
    for _ in timing.rounds(args.repeats + 1):
        for name in steps:
            (states[name], metrics), seconds = timing.timed(compiled[name], states[name], tasks)
            times[name].append(seconds)
            losses[name].append(float(metrics["loss"]))
    rows = [{"step": name, "compile_s": round(compile_s[name], 2),
             # The first call of each is a warm-up, not timed in the medians.
             "step_ms_median": 1e3 * statistics.median(times[name][1:]),
             "step_ms_min": 1e3 * min(times[name][1:]), "steps": len(times[name]) - 1}
            for name in steps]
    a, b = (losses[name] for name in steps)
    report = {**timing.run_header(), "device": str(jax.devices()[0]), "setting": args.setting,
              "init_meta_state_ms": 1e3 * init_s, "same_losses": a == b, "rows": rows}
    print(json.dumps(report, indent=1))
    timing.write_report(report, args.out)
    return 0 if a == b else 1


if __name__ == "__main__":
    sys.exit(main())
