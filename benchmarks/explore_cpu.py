"""Times formulations of the MAML++ Conv4 outer step on this machine (one per process).

  python benchmarks/explore_cpu.py --conv xla --batching map [--unroll 1] [--repeats 5]

Prints one JSON line: compile seconds (lower + compile) and the median steady-state step.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [_HERE, os.path.dirname(_HERE)]

import bench  # noqa: E402
import jax  # noqa: E402
import jax_setup  # noqa: E402
import numpy as np  # noqa: E402
import timing  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--setting", default="omniglot_5w1s")
    ap.add_argument("--conv", default=None)
    ap.add_argument("--batching", default="auto")
    ap.add_argument("--unroll", default="auto")
    ap.add_argument("--remat", action="store_true")
    ap.add_argument("--first-order", action="store_true")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--meta-batch", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--variant", default="im2col", choices=sorted(VARIANTS))
    ap.add_argument("--pool", default="window", choices=["window", "reshape"])
    a = ap.parse_args()
    if a.unroll != "auto":
        a.unroll = {"true": True, "false": False}.get(a.unroll.lower(), None) \
            if a.unroll.lower() in ("true", "false") else int(a.unroll)
    from maml_jax import models
    if a.variant != "im2col":
        models.conv3x3_patches = VARIANTS[a.variant]
    if a.pool == "reshape":
        import flax.linen as nn
        nn.max_pool = _reshape_pool
    s = jax_setup.SETTINGS[a.setting]
    import dataclasses
    s = dataclasses.replace(s, first_order=a.first_order,
                            meta_batch=a.meta_batch or s.meta_batch,
                            inner_steps=a.steps or s.inner_steps)
    _, state, step_fn, _ = jax_setup.build(s, conv_impl=a.conv, task_batching=a.batching,
                                           remat=a.remat, unroll=a.unroll)
    tasks = jax.device_put(jax_setup.make_tasks(s))
    lowered, trace_s = timing.timed(jax_setup_lower, step_fn, state, tasks)
    exe, compile_s = timing.timed(lowered.compile)
    state, m, times = timing.time_steps(exe, state, tasks, repeats=a.repeats)
    first_loss = float(m["loss"])
    med = float(np.median(times))
    print(json.dumps({"setting": s.name, "conv": a.conv, "batching": a.batching,
                      "unroll": a.unroll, "variant": a.variant, "pool": a.pool, "remat": a.remat,
                      "first_order": a.first_order,
                      "trace_s": round(trace_s, 2), "compile_s": round(compile_s, 2),
                      "step_ms": round(med * 1e3, 1), "min_ms": round(min(times) * 1e3, 1),
                      "first_loss": first_loss, "xla_flags": os.environ.get("XLA_FLAGS", "")}))


def _reshape_pool(x, window_shape, strides=None, padding="VALID"):
    n, h, w, c = x.shape
    h2, w2 = h // 2, w // 2
    x = x[:, :2 * h2, :2 * w2, :].reshape(n, h2, 2, w2, 2, c)
    return x.max(axis=(2, 4))


# The library's im2col, and the benchmark-only layouts of bench.py (one definition each).
VARIANTS = {"im2col": None, **bench._CONV_OVERRIDES}


def jax_setup_lower(step_fn, state, tasks):
    import functools
    assert isinstance(step_fn, functools.partial)
    return step_fn.func.lower(state, tasks, **step_fn.keywords)


if __name__ == "__main__":
    main()
