"""What MAML++ costs over MAML: step time and memory of the same Conv4 with the same steps.

    python benchmarks/cost_maml_vs_mamlpp.py [--settings omniglot_5w1s,omniglot_20w1s]
        [--repeats 10] [--out benchmarks/results/cost_maml_vs_mamlpp_cpu.json]

The claim checked: MAML++ is "~30-50 % slower than MAML (but JIT helps)" and needs
"slightly more memory". Rows are the training step of ``experiments`` (``wiring.get_setup``)
for the rows of the MAML++ ablation (``experiments/configs/study_omniglot_ablation.py``):
MAML (fixed scalar alpha, final-step loss, shared BN), MAML with one component added
(MSL, LSLR, BNWB + BNRS), and MAML++; all second order, Conv4 with 64 filters, 5 inner
steps, meta-batch 8, the library's defaults for the device. One outer step on fixed
random tasks of the real shapes, timed round-robin (one step of each row in turn, so that
every row sees the same machine load), blocking on the result; compile time apart.

Memory: XLA's buffer assignment of the compiled step (``compiled.memory_analysis()``:
temporaries, arguments, outputs), exact and independent of other processes; on a GPU also
the device's peak bytes in use (process-wide, so each row runs its first step after a
reset only where the backend supports it: reported as-is).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from benchmarks import timing
from experiments import wiring
from experiments.config_lib import validate_config
from experiments.configs import study_omniglot_ablation as ablation
from maml_jax import meta

SETTINGS = {"omniglot_5w1s": (5, 1), "omniglot_20w1s": (20, 1)}
ROWS = ("MAML", "MAML+MSL", "MAML+LSLR", "MAML+BN", "MAML++")


def row_config(row: str, ways: int, shots: int, tiny: bool, filters: int | None = None) -> dict:
    cfg = dict(ablation.rows(ways, shots)[f"{row}_{ways}w{shots}s"])
    # The same step shape for every row: MAML++'s meta-batch, query and inner steps.
    cfg.update(name=f"cost_{row}", data="synthetic", first_order_epochs=0,
               paper_test_accuracy=None)
    if filters is not None:
        cfg.update(num_filters=filters)
    if tiny:
        cfg.update(num_filters=8, num_inner_steps=2, num_inner_steps_eval=2, meta_batch_size=2)
    return validate_config(cfg)


def device_name() -> str:
    d = jax.devices()[0]
    if d.platform == "cpu":
        sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
        from bench import cpu_name
        return cpu_name()
    return d.device_kind


def run_info() -> dict:
    """What every benchmark result records about the run: date, command, device, versions."""
    return {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "argv": sys.argv,
            "device": device_name(), "backend": jax.default_backend(),
            "jax": jax.__version__, "python": platform.python_version(),
            # The GPU queue varies both through the environment (JAX_DEFAULT_MATMUL_PRECISION,
            # XLA_FLAGS): each result says which it ran with.
            "precision": "float32, matmul precision "
                         f"{jax.config.jax_default_matmul_precision or 'default'}",
            "xla_flags": os.environ.get("XLA_FLAGS", "")}


def write_results(out: str | None, results: dict, table: str) -> None:
    """Prints the markdown table; with ``out``, writes the JSON there and the table beside it."""
    print(table)
    if out:
        out = pathlib.Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=1))
        out.with_suffix(".md").write_text(table + "\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--settings", default="omniglot_5w1s")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--tiny", action="store_true", help="plumbing dry run (numbers meaningless)")
    p.add_argument("--rows", default=",".join(ROWS), help="subset of " + ",".join(ROWS))
    p.add_argument("--epoch", type=int, default=0,
                   help="the training epoch whose phase is timed (MSL is on while epoch < "
                        "msl_epochs, 10 in these configs)")
    p.add_argument("--filters", type=int, default=None,
                   help="Conv4 filters (default: the ablation's 64)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if "MAML" not in args.rows.split(","):
        p.error("--rows must include MAML (the baseline of the ratios)")
    results = {**run_info(), "rows": []}
    for setting in args.settings.split(","):
        ways, shots = SETTINGS[setting]
        runners = {}
        for row in args.rows.split(","):
            if row not in ROWS:
                p.error(f"unknown row {row!r}; rows: {ROWS}")
            cfg = row_config(row, ways, shots, args.tiny, args.filters)
            setup = wiring.get_setup(cfg)
            state = wiring.init_state(cfg, setup)
            rng = np.random.RandomState(0)
            b, n, q = cfg["meta_batch_size"], cfg["num_ways"], cfg["q_query"]
            xs = jnp.asarray(rng.rand(b, n * shots, 28, 28, 1), jnp.float32)
            xq = jnp.asarray(rng.rand(b, n * q, 28, 28, 1), jnp.float32)
            ys = jnp.tile(jnp.repeat(jnp.arange(n), shots), (b, 1))
            yq = jnp.tile(jnp.repeat(jnp.arange(n), q), (b, 1))
            tasks = ((xs, ys), (xq, yq))
            phase = meta.phase(setup.meta_config, args.epoch)
            step = jax.jit(lambda st, t, s=setup, ph=phase: meta.outer_step(
                st, t, loss_fn=s.train_loss_fn, optimizer=s.optimizer, config=s.meta_config,
                phase=ph))
            compiled, compile_s = timing.compile_timed(step, state, tasks)
            mem = compiled.memory_analysis()
            timing.timed(compiled, state, tasks)   # warm-up
            runners[row] = dict(compiled=compiled, state=state, tasks=tasks, times=[],
                                msl_active=phase.msl, compile_s=compile_s, mem=mem, cfg=cfg)
            print(f"{setting} {row}: compiled in {compile_s:.1f} s", flush=True)
        for _ in timing.rounds(args.repeats):
            for r in runners.values():
                r["times"].append(timing.timed(r["compiled"], r["state"], r["tasks"])[1])
        base = statistics.median(runners["MAML"]["times"])
        base_tmp = runners["MAML"]["mem"].temp_size_in_bytes
        for row, r in runners.items():
            med = statistics.median(r["times"])
            m = r["mem"]
            results["rows"].append({
                "setting": setting, "row": row, "msl": r["cfg"]["msl"], "epoch": args.epoch,
                "msl_active": r["msl_active"],
                "learn_inner_lrs": r["cfg"]["learn_inner_lrs"],
                "per_step_bn": r["cfg"]["per_step_bn"],
                "num_inner_steps": r["cfg"]["num_inner_steps"],
                "num_filters": r["cfg"]["num_filters"],
                "meta_batch_size": r["cfg"]["meta_batch_size"],
                "compile_s": r["compile_s"], "step_ms_median": 1e3 * med,
                "step_ms_min": 1e3 * min(r["times"]), "n": len(r["times"]),
                "time_vs_maml": med / base,
                "temp_bytes": int(m.temp_size_in_bytes),
                "argument_bytes": int(m.argument_size_in_bytes),
                "output_bytes": int(m.output_size_in_bytes),
                "temp_vs_maml": m.temp_size_in_bytes / max(1, base_tmp),
            })
    md = [f"MAML++ vs MAML step cost ({results['date']}, {results['device']}, "
          f"{results['backend']}, jax {results['jax']}, {results['precision']})", "",
          "| setting | row | compile (s) | step ms (median / min, n) | time vs MAML | "
          "XLA temporaries (MiB) | vs MAML |", "|---|---|---|---|---|---|---|"]
    for r in results["rows"]:
        md.append(f"| {r['setting']} | {r['row']} | {r['compile_s']:.1f} | "
                  f"{r['step_ms_median']:.1f} / {r['step_ms_min']:.1f}, {r['n']} | "
                  f"{r['time_vs_maml']:.2f}x | {r['temp_bytes'] / 2**20:.1f} | "
                  f"{r['temp_vs_maml']:.2f}x |")
    write_results(args.out, results, "\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
