"""Peak memory of the second-order MAML++ outer step vs inner steps, with and without remat.

Compiles (does not run) the maml_jax step and reads XLA's own buffer assignment
(``compiled.memory_analysis()``): arguments + outputs + temporaries, minus donated aliases.
That is the step's device-memory footprint on any backend, deterministic, and unaffected by
other processes, so it can be measured on a CPU. On a GPU, ``gpu_check.sh`` measures the
allocator peak of the running step and PyTorch's ``torch.cuda.max_memory_allocated`` instead.

    python benchmarks/memory.py --setting omniglot_20w1s --steps 1,5,10,20 --out FILE.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax

from benchmarks import jax_setup, timing


def footprint(setting: jax_setup.Setting, remat: bool) -> dict:
    """Compiles one outer step; returns XLA's memory analysis in bytes and compile seconds."""
    _, state, step_fn, _ = jax_setup.build(setting, remat=remat)
    tasks = jax_setup.make_tasks(setting)
    compiled, seconds = (
        timing.compile_timed(step_fn.func, state, tasks, **step_fn.keywords)
        if hasattr(step_fn, "func") else timing.compile_timed(step_fn, state, tasks))
    m = compiled.memory_analysis()
    total = (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
             - m.alias_size_in_bytes)
    return {"temp_bytes": m.temp_size_in_bytes, "argument_bytes": m.argument_size_in_bytes,
            "output_bytes": m.output_size_in_bytes, "alias_bytes": m.alias_size_in_bytes,
            "total_bytes": total, "compile_s": round(seconds, 2)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--setting", default="omniglot_20w1s", choices=sorted(jax_setup.SETTINGS))
    ap.add_argument("--steps", default="1,5,10,20")
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)
    base = jax_setup.SETTINGS[args.setting]
    rows = []
    print("| setting | inner steps | remat | XLA temp (MiB) | total footprint (MiB) "
          "| compile (s) |")
    print("|---|---|---|---|---|---|")
    for n in [int(v) for v in args.steps.split(",")]:
        for remat in (False, True):
            r = footprint(dataclasses.replace(base, inner_steps=n), remat)
            r.update(setting=args.setting, inner_steps=n, remat=remat)
            rows.append(r)
            print(f"| {args.setting} second-order | {n} | {'on' if remat else 'off'} | "
                  f"{r['temp_bytes'] / 2**20:.1f} | {r['total_bytes'] / 2**20:.1f} | "
                  f"{r['compile_s']} |", flush=True)
    meta = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "argv": sys.argv,
            "jax": jax.__version__, "backend": jax.default_backend(),
            "device": jax.devices()[0].device_kind}
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
