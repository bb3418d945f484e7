"""Where the time of one outer step goes: a ``jax.profiler`` trace reduced to a text table.

Traces ``--steps`` calls of the default MAML++ step (``bench.JaxRunner``, random Omniglot-
shaped tasks) after warm-up, reads the trace back with ``jax.profiler.ProfileData`` and
prints, per step: wall time, device busy time (the sum of the device's op events; on a
GPU, its kernels), the number of device ops, and the top ops by time, grouped by op name
with the trailing ``.N`` instance number dropped (``fusion.12`` -> ``fusion``) and as
single instances. A busy time far under the wall time, or thousands of microsecond-sized
ops, says the step is bound by launches and host work, not by arithmetic. The compiled
executable's ``cost_analysis`` (FLOPs, bytes) is reported beside it.

Examples::

    python benchmarks/profile_step.py --setting omniglot_20w1s --out $OUT/profile_20w1s.json
    python benchmarks/profile_step.py --setting omniglot_5w1s --tiny   # CPU dry run
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import glob
import json
import os
import re
import sys
import tempfile
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [_HERE, os.path.dirname(_HERE)]

import bench  # noqa: E402
import jax  # noqa: E402
import jax_setup  # noqa: E402
import timing  # noqa: E402

# Trace lines that summarise rather than time single ops (counting them would count twice).
_SUMMARY_LINES = ("XLA Modules", "Steps", "XLA TraceMe", "Framework", "Source code",
                  "python", "Launch Stats", "TensorFlow")


def device_events(profile) -> tuple[str, list[tuple[str, float]]]:
    """``(plane name, [(op name, duration ns)])`` of the device's op events.

    GPU: the ``/device:GPU:0`` plane, its "XLA Ops" line where present (HLO op names),
    else every stream line. CPU (dry runs): the host plane's XLA threads.
    """
    planes = list(profile.planes)
    gpu = [p for p in planes if p.name.startswith("/device:GPU")]
    if gpu:
        plane = gpu[0]
        lines = [ln for ln in plane.lines if ln.name == "XLA Ops"] or [
            ln for ln in plane.lines if not ln.name.startswith(_SUMMARY_LINES)]
    else:
        plane = next(p for p in planes if p.name == "/host:CPU")
        lines = [ln for ln in plane.lines if "XLA" in ln.name]
    return plane.name, [(e.name, float(e.duration_ns)) for ln in lines for e in ln.events]


def op_table(events: list[tuple[str, float]], steps: int, top: int) -> dict:
    by_kind = collections.defaultdict(lambda: [0.0, 0])
    by_name = collections.defaultdict(lambda: [0.0, 0])
    for name, ns in events:
        kind = re.sub(r"\.\d+$", "", name)
        by_kind[kind][0] += ns
        by_kind[kind][1] += 1
        by_name[name][0] += ns
        by_name[name][1] += 1

    def rows(d):
        total = sum(v[0] for v in d.values()) or 1.0
        items = sorted(d.items(), key=lambda kv: -kv[1][0])[:top]
        return [{"op": k, "ms_per_step": v[0] / steps / 1e6, "share": v[0] / total,
                 "count_per_step": v[1] / steps, "us_per_call": v[0] / max(v[1], 1) / 1e3}
                for k, v in items]

    return {"by_kind": rows(by_kind), "by_instance": rows(by_name)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--setting", default="omniglot_20w1s", choices=sorted(jax_setup.SETTINGS))
    p.add_argument("--variant", default="auto:auto:auto", help="bench.py's --jax-variants form")
    p.add_argument("--steps", type=int, default=10, help="traced outer steps")
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--tiny", action="store_true", help="4 filters, 2 tasks (CPU dry run)")
    p.add_argument("--out", default="", help="JSON report; a .md table is written beside it")
    args = p.parse_args(argv)
    s = jax_setup.SETTINGS[args.setting]
    if args.tiny:
        s = dataclasses.replace(s, filters=4, meta_batch=2)
    runner = bench.JaxRunner(s, args.variant)
    compile_s = runner.compile()
    for _ in range(3):
        runner.step()
    cost = runner.exe.cost_analysis()
    cost = (cost[0] if isinstance(cost, (list, tuple)) and cost else cost) or {}
    with tempfile.TemporaryDirectory() as d:
        with jax.profiler.trace(d):
            _, seconds = timing.timed(lambda: [runner.step() for _ in range(args.steps)])
        wall_ms = seconds / args.steps * 1e3
        files = glob.glob(os.path.join(d, "**", "*.xplane.pb"), recursive=True)
        if not files:
            raise SystemExit("the profiler wrote no .xplane.pb trace")
        plane, events = device_events(jax.profiler.ProfileData.from_file(files[0]))
    busy_ms = sum(ns for _, ns in events) / args.steps / 1e6
    report = {
        "setting": s.name + (" (tiny)" if args.tiny else ""), "variant": args.variant,
        "device": runner.device_name(), "jax": jax.__version__, "backend": jax.default_backend(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "argv": sys.argv,
        "compile_s": round(compile_s, 2), "traced_steps": args.steps, "plane": plane,
        "wall_ms_per_step_traced": wall_ms, "device_busy_ms_per_step": busy_ms,
        "device_ops_per_step": len(events) / args.steps,
        "flops_per_step": cost.get("flops"), "bytes_accessed_per_step": cost.get("bytes accessed"),
        **op_table(events, args.steps, args.top)}
    md = markdown(report)
    print(md)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)) or ".", exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)
        with open(os.path.splitext(args.out)[0] + ".md", "w") as f:
            f.write(md)
    return 0


def markdown(r: dict) -> str:
    flops = r["flops_per_step"]
    lines = [f"### Profile of one outer step: {r['setting']}, jax {r['variant']} on {r['device']}",
             "",
             f"jax {r['jax']}, {r['date']}; compile {r['compile_s']} s; {r['traced_steps']} traced "
             f"steps; wall {r['wall_ms_per_step_traced']:.2f} ms/step under the tracer; device "
             f"busy {r['device_busy_ms_per_step']:.2f} ms/step "
             f"({r['device_busy_ms_per_step'] / r['wall_ms_per_step_traced']:.0%}) in "
             f"{r['device_ops_per_step']:.0f} device ops/step"
             + (f"; XLA cost analysis {flops / 1e9:.2f} GFLOP/step" if flops else "") + ".",
             "", "| op kind | ms/step | share of busy | calls/step | us/call |",
             "|---|---|---|---|---|"]
    lines += [f"| {x['op']} | {x['ms_per_step']:.3f} | {x['share']:.1%} | "
              f"{x['count_per_step']:.0f} | {x['us_per_call']:.1f} |" for x in r["by_kind"]]
    lines += ["", "| op instance | ms/step | share of busy | calls/step | us/call |",
              "|---|---|---|---|---|"]
    lines += [f"| {x['op'][:60]} | {x['ms_per_step']:.3f} | {x['share']:.1%} | "
              f"{x['count_per_step']:.0f} | {x['us_per_call']:.1f} |" for x in r["by_instance"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
