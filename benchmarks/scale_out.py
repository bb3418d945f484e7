"""Throughput of the sharded training step against devices, and against seeds in one program.

    python benchmarks/scale_out.py [--devices 1,2,4] [--seeds 1,3,8] [--filters 64]
        [--ways 5] [--steps-per-call 5] [--repeats 3] [--out benchmarks/results/scale_out_cpu.json]

Each point runs in a fresh subprocess (``--worker``), because the device count is fixed
when JAX starts: on a CPU the extra devices are fake (``--xla_force_host_platform_device_count``),
they share the same cores, and their numbers show that the sharded step runs, not speed
(the table says so). On a GPU host the real devices are used (a point asking for more
devices than exist is skipped).

Step: ``maml_jax.parallel.jit_train_steps`` of MAML++ Omniglot N-way 1-shot, N = ``--ways``
(``mamlpp_config(N, 1)``: Conv4, 5 inner steps, MSL, second order, meta-batch 8; synthetic
images of the real shape, tasks drawn on the device), ``steps_per_call`` meta-steps per
call. Seeds: a population of S learners (``population=True``) on one device; the figure of
merit is seed-steps/s (meta-steps/s x S). Compile time and steady state (median over
``repeats`` calls, blocking on the result) are reported apart.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def worker(args) -> dict:
    import jax

    from benchmarks import timing
    from experiments import datasets, wiring
    from experiments.config_lib import mamlpp_config, validate_config
    from maml_jax import meta, parallel

    if jax.device_count() < args.num_devices:
        return {"skipped": f"{jax.device_count()} devices available"}
    cfg = validate_config(mamlpp_config(
        args.ways, 1, name="scale_out", data="synthetic", synthetic_num_classes=1100,
        synthetic_counts=(1000, 50, 50), num_filters=args.filters,
        steps_per_call=args.steps_per_call, num_seeds=args.num_seeds))
    setup = wiring.get_setup(cfg)
    devices = jax.devices()[:args.num_devices]
    mesh = None if len(devices) == 1 else parallel.make_mesh(devices=devices)
    images, splits = datasets.load_images(cfg, None)
    data = datasets.select_classes(images, splits["train"])
    data = jax.device_put(data) if mesh is None else parallel.replicate(data, mesh)
    state = wiring.place_state(wiring.init_population(cfg, setup), cfg, mesh)
    kw = dict(mesh=mesh, population=cfg["num_seeds"] > 1, sample_tasks=setup.sample_fn,
              num_steps=args.steps_per_call, loss_fn=setup.train_loss_fn,
              optimizer=setup.optimizer, config=setup.meta_config,
              phase=meta.phase(setup.meta_config, 0))
    compiled, compile_s = timing.compile_timed(parallel.jit_train_steps, state, data, **kw)
    state, _, times = timing.time_steps(compiled, state, data, repeats=args.repeats)
    med = statistics.median(times)
    steps_s = args.steps_per_call / med
    return {"devices": len(devices), "seeds": cfg["num_seeds"], "compile_s": compile_s,
            "call_s_median": med, "call_s_min": min(times), "n": len(times),
            "meta_steps_per_s": steps_s, "seed_steps_per_s": steps_s * cfg["num_seeds"],
            "device_kind": devices[0].device_kind, "platform": devices[0].platform}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--devices", default="1,2,4")
    p.add_argument("--seeds", default="1,3,8")
    p.add_argument("--filters", type=int, default=64)
    p.add_argument("--ways", type=int, default=5, help="N of N-way 1-shot (5 or 20)")
    p.add_argument("--steps-per-call", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=None)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--num-devices", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--num-seeds", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return 0

    import jax
    from cost_maml_vs_mamlpp import run_info, write_results
    cpu = jax.default_backend() == "cpu"
    points = [(d, 1) for d in map(int, args.devices.split(","))]
    points += [(1, s) for s in map(int, args.seeds.split(",")) if (1, s) not in points]
    results = {**run_info(), "fake_devices": cpu, "points": []}
    for d, s in points:
        env = dict(os.environ)
        if cpu:
            env["XLA_FLAGS"] = (f"{env.get('XLA_FLAGS', '')} "
                                f"--xla_force_host_platform_device_count={d}")
        cmd = [sys.executable, __file__, "--worker", "--num-devices", str(d), "--num-seeds", str(s),
               "--filters", str(args.filters), "--ways", str(args.ways),
               "--steps-per-call", str(args.steps_per_call), "--repeats", str(args.repeats)]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if out.returncode:
            point = {"devices": d, "seeds": s, "error": out.stderr.strip().splitlines()[-1]}
        else:
            point = {"devices": d, "seeds": s, **json.loads(out.stdout.strip().splitlines()[-1])}
        results["points"].append(point)
        print(json.dumps(point), flush=True)
    label = " (fake CPU devices sharing the same cores: correctness, not speed)" if cpu else ""
    md = [f"Scale-out throughput ({results['date']}, {results['device']}, {results['backend']}, "
          f"jax {results['jax']}, {results['precision']}); MAML++ Omniglot {args.ways}w1s, Conv4 "
          f"{args.filters} filters, meta-batch 8, {args.steps_per_call} meta-steps per call", "",
          f"| devices{label} | seeds | compile (s) | call s (median / min, n) | meta-steps/s | "
          "seed-steps/s |", "|---|---|---|---|---|---|"]
    for r in results["points"]:
        if "meta_steps_per_s" not in r:
            md.append(f"| {r['devices']} | {r['seeds']} | {r.get('skipped') or r.get('error')} "
                      "| | | |")
            continue
        md.append(f"| {r['devices']} | {r['seeds']} | {r['compile_s']:.1f} | "
                  f"{r['call_s_median']:.2f} / {r['call_s_min']:.2f}, {r['n']} | "
                  f"{r['meta_steps_per_s']:.3f} | {r['seed_steps_per_s']:.3f} |")
    write_results(args.out, results, "\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
