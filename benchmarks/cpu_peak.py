"""What this machine's float32 matmuls reach: the ceiling to read a step's FLOP rate against.

    python benchmarks/cpu_peak.py --out benchmarks/results/cpu_peak.json

Times square float32 matmuls (1024, 2048) in JAX (jitted, results waited for) and in
PyTorch (its threads set to the machine's cores), median of 10 after a warm-up, and reports
GFLOP/s (2 n^3 per product). ``benchmarks/profile_step.py`` reports a step's FLOPs from XLA's
cost analysis; divided by its time, and by this, it says how much of the machine a step
uses.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import jax.numpy as jnp

from benchmarks import timing


def _gflops(fn, n: int, repeats: int = 10) -> float:
    fn()
    times = [timing.timed(fn)[1] for _ in range(repeats)]
    return 2 * n ** 3 / statistics.median(times) / 1e9


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="1024,2048")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    rows = []
    mm = jax.jit(jnp.matmul)
    for n in map(int, args.sizes.split(",")):
        a = jnp.ones((n, n), jnp.float32)
        rows.append({"framework": "jax", "n": n,
                     "gflops": round(_gflops(functools.partial(mm, a, a), n), 1)})
        try:
            import torch
        except ImportError:
            continue
        torch.set_num_threads(os.cpu_count())
        t = torch.ones(n, n)
        rows.append({"framework": f"torch {torch.__version__} ({os.cpu_count()} threads)",
                     "n": n, "gflops": round(_gflops(functools.partial(torch.matmul, t, t), n),
                                             1)})
    report = {**timing.run_header(), "rows": rows}
    print(json.dumps(report, indent=1))
    timing.write_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
