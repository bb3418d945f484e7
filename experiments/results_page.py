"""The results page: every measured number of the docs, rendered from the committed result files.

Run ``python -m experiments.results_page`` after adding or replacing a result file. It
rewrites ``docs/results.md`` and the README's headline table (between the
``<!-- results:headline -->`` markers) from the JSON files under ``experiments/results/`` and
``benchmarks/results/``. With ``--check`` it writes nothing and exits 1 when either file
differs from what the result files give (``tests/test_results_page.py`` runs it in CI).

The page is a registry of sections (``SECTIONS``): a title, a scale label, the files, and a
builder that turns the files into Markdown tables. Every number on the page comes from a
file; the text written here says what was measured and how, never what came out.

Example:
    >>> _num(0.0123), _num(3.5e7), _pct(98.034, 0.528)
    ('0.012', '3.50e+07', '98.03 ± 0.53 %')
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib
import json
import math
import re
import shlex
import statistics
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from experiments.config_lib import config_from_json, schedule_differences

__all__ = ["HEADLINE_BEGIN", "HEADLINE_END", "SECTIONS", "Section", "main", "render_headline",
           "render_page", "update_readme"]

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "results.md"
README = ROOT / "README.md"
HEADLINE_BEGIN = "<!-- results:headline -->"
HEADLINE_END = "<!-- /results:headline -->"
CPU_XEON = "2-core Intel Xeon CPU (no GPU)"
CPU_EPYC_ALONE = "2-core AMD EPYC CPU (no GPU)"
CPU_EPYC = "2-core AMD EPYC CPU, shared with other jobs (read the min columns)"

Lines = list[str]


@dataclasses.dataclass(frozen=True)
class Section:
    """One section of the results page.

    Attributes:
        title: The section's heading.
        scale: The label every number of the section carries, e.g. "smoke scale".
        files: Glob patterns relative to the repository root; each must match a file.
        build: Turns the matched files (sorted by path) into Markdown lines.
        about: What was measured and how, in words (no measured numbers).
        where: Machine and date where the files do not record them.
        part: The part of the page the section belongs to.
    """

    title: str
    scale: str
    files: tuple[str, ...]
    build: Callable[[list[Path]], Lines]
    about: str = ""
    where: str = ""
    part: str = "Experiments"

    def paths(self) -> list[Path]:
        """The files of the section; a pattern that matches nothing is an error."""
        found = []
        for pattern in self.files:
            matched = sorted(ROOT.glob(pattern))
            if not matched:
                raise FileNotFoundError(f"results page, section {self.title!r}: no file "
                                        f"matches {pattern!r}")
            found += matched
        return found


# --- formatting -------------------------------------------------------------------------

def _num(x: float | None) -> str:
    """A loss or a ratio: three decimals in [1e-3, 1e3), otherwise scientific."""
    if x is None:
        return "-"
    if not math.isfinite(x):
        return str(x)
    return f"{x:.3f}" if 1e-3 <= abs(x) < 1e3 else f"{x:.2e}"


def _pct(mean: float, spread: float | None = None) -> str:
    return f"{mean:.2f} %" if spread is None else f"{mean:.2f} ± {spread:.2f} %"


def _err(x: float) -> str:
    return f"{x:.1e}"


def _mib(n_bytes: float) -> str:
    return f"{n_bytes / 2**20:.1f}"


def _code(text: str) -> str:
    return "`" + str(text).replace("`", "'") + "`"


def _rel(path: Path) -> str:
    return _code(path.relative_to(ROOT).as_posix())


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Lines:
    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return [*lines, ""]


@functools.cache
def _load(path: Path) -> Any:
    return json.loads(path.read_text())


def _command(argv: Sequence[str]) -> str:
    return _code("python " + shlex.join(argv))


def _meta(date: str | None = None, machine: str | None = None, command: str | None = None,
          versions: str | None = None) -> Lines:
    parts = [f"{name}: {value}" for name, value in
             (("Date", date), ("Machine", machine), ("Versions", versions),
              ("Command", command)) if value]
    return ["; ".join(parts) + ".", ""]


def _versions(meta: dict) -> str:
    names = ("jax", "torch", "python")
    found = {**meta.get("versions", {}), **{n: meta[n] for n in names if n in meta}}
    return ", ".join(f"{n} {found[n]}" for n in names if n in found)


# --- experiments: training runs and the paper's table -------------------------------------

def _schedule(cfg: dict) -> str:
    return (f"{cfg['num_epochs']} epochs x {cfg['iterations_per_epoch']} iterations, "
            f"{cfg['num_filters']} filters, meta-batch {cfg['meta_batch_size']}")


def _training_runs(paths: list[Path], *, paper: bool = False) -> Lines:
    """One row per run directory (its test_results.json, config.json, train_summary.json)."""
    rows = []
    for path in paths:
        run, res = path.parent, _load(path)
        cfg, summary = _load(run / "config.json"), _load(run / "train_summary.json")
        if "over_seeds" in res:  # a population: mean ± std over seeds
            seeds = res["over_seeds"]
            best = _pct(seeds["best"]["mean_pct"], seeds["best"]["std_pct"]) + " (seed std)"
            best += "; per seed " + ", ".join(f"{a:.2f}" for a in seeds["best"]["per_seed_pct"])
            ensemble = _pct(seeds["ensemble"]["mean_pct"], seeds["ensemble"]["std_pct"])
        else:  # one seed: mean ± 95 % interval over the test tasks
            best = _pct(res["best"]["test_accuracy_pct"], res["best"]["test_ci95_pct"])
            ensemble = _pct(res["ensemble"]["test_accuracy_pct"], res["ensemble"]["test_ci95_pct"])
        # The rate update as the run applied it (a config saved before 2026-12-06 says
        # "auto"; config_from_json reads it as the preset it meant then).
        rate_update = config_from_json(json.dumps(cfg))["rate_update"]
        row = [_rel(run), _code(cfg["name"]), _schedule(cfg),
               f"{cfg['lr_granularity']} ({rate_update} update), inner loop "
               f"{cfg.get('inner_loop', 'all')}, conv {cfg['conv_impl']}",
               cfg.get("num_seeds", 1), best,
               f"{ensemble} (top {res['ensemble']['size']})",
               ", ".join(f"{a:.1f}" for a in res["best"]["per_step_accuracy_pct"]),
               f"{summary['wall_seconds_this_run']:.0f}"]
        if paper:
            row.append(_pct(*cfg["paper_test_accuracy"]) + " (full schedule)")
        rows.append(row)
    header = ["run", "config", "schedule run", "rates, inner loop, convolution", "seeds",
              "test accuracy, best checkpoint", "ensemble", "accuracy after steps 0..N %",
              "train wall-clock (s, all seeds, compile included)"]
    note = ("One seed: mean ± 95 % interval over the test tasks. Several seeds: mean ± std "
            "over the seeds.")
    return [*_table(header + (["paper"] if paper else []), rows), note, ""]


def _paper_table(paths: list[Path]) -> Lines:
    """The paper's cells with their numbers (from the configs) and the runs made of them."""
    order = importlib.import_module("experiments.configs.paper_table").get_config().order
    runs = [(p.parent, _load(p)) for p in paths]
    rows = []
    for name in order:
        cfg = importlib.import_module(f"experiments.configs.{name}").get_config()
        made = []
        for run, ran in runs:
            if ran["name"] != name and not ran["name"].startswith(name + "_"):
                continue
            summary_file = run / "train_summary.json"
            summary = _load(summary_file) if summary_file.exists() else {"finished": True}
            diffs = schedule_differences(ran, cfg.to_dict())   # reproduce's definition
            label = "full schedule" if not diffs else "reduced: " + ", ".join(diffs)
            if not summary["finished"]:  # stopped early (a budget): never a full run
                label = f"partial, {summary['epochs_done']} of " + _schedule(ran)
            made.append(f"{_rel(run)} ({label})")
        cell, method = name.rsplit("_", 1)
        rows.append([cell, {"maml": "MAML", "mamlpp": "MAML++"}.get(method, method),
                     _pct(*cfg["paper_test_accuracy"]), _schedule(cfg),
                     "; ".join(made) or "not run yet"])
    return _table(["cell", "method", "paper (test accuracy)", "paper schedule (the config)",
                   "runs in this repository"], rows)


# --- experiments: studies ------------------------------------------------------------------

_FAILED_AT = re.compile(r"at outer step (\d+)")


def _study(paths: list[Path]) -> Lines:
    """The table of ``experiments/study.py`` (one row per setting and method) and its failures."""
    out: Lines = []
    for path in paths:
        study = _load(path)
        out += _meta(date=study["date"], command=_code(study["command"]))
        groups = study["groups"].values()
        accuracy = all("accuracy_mean" in g["pooled"] for g in groups)
        timed = all("train_seconds_mean" in g for g in groups)
        rows = []
        for g in groups:
            pooled, seeds = g["pooled"], len(g["seeds"])
            final = _num(pooled["final_mean"])
            if seeds > 1:
                final += f" ± {_num(g['seed_std_final_mean'])}"
            row = [g["setting"], g["method"], seeds, pooled["trained_steps"], final,
                   _num(pooled["final_std"]), _num(pooled["final_p99"]),
                   f"{100 * pooled['overshoot_any_trained']:.1f} %", _num(pooled["mean"][1]),
                   _num(pooled["last_mean"])]
            if accuracy:
                acc = [f"{100 * s['final_accuracy']:.2f}" for s in g["per_seed"]]
                mean = f"{100 * pooled['final_accuracy']:.2f}"
                if seeds > 1:
                    mean += f" ± {100 * g['seed_std_final_accuracy']:.2f}"
                row += [" / ".join(acc), mean,
                        ", ".join(f"{100 * a:.1f}" for a in pooled["accuracy_mean"])]
            if timed:
                row.append(f"{g['train_seconds_mean']:.0f}")
            rows.append(row)
        header = ["setting", "method", "seeds finished", "N", "loss after N (mean ± seed std)",
                  "task std", "p99", "overshoot, steps < N", "loss after step 1",
                  "loss after 2N"]
        if accuracy:
            header += ["accuracy after N %, per seed", "mean ± seed std",
                       "accuracy after steps 0..2N %"]
        if timed:
            header.append("training s per seed (wall clock)")
        out += _table(header, rows)
        failed: dict[str, list[str]] = {}
        for f in study["failed"]:
            cell = re.sub(r"_s\d+$", "", Path(f["workdir"]).name)
            match = _FAILED_AT.search(f["error"])
            failed.setdefault(cell, []).append(match.group(1) if match else f["error"])
        if failed:
            out += ["Runs stopped by a non-finite loss (`check_finite`):", ""]
            out += _table(["cell", "seeds stopped", "at outer step"],
                          [[c, len(s), ", ".join(s)] for c, s in failed.items()])
    return out


def _outliers(paths: list[Path]) -> Lines:
    """``experiments/sinusoid_outliers.py``: what makes the wide interval of one run."""
    d = _load(paths[0])
    out = _meta(date=d["date"], command=_code(d["command"]))
    summary = [
        ["mean ± 95 % interval", f"{_num(d['mean_ci95'][0])} ± {_num(d['mean_ci95'][1])}"],
        [f"the same without the top {len(d['top'])} tasks",
         f"{_num(d['mean_ci95_without_top'][0])} ± {_num(d['mean_ci95_without_top'][1])}"],
        ["median", _num(d["median"])], ["p99", _num(d["p99"])],
        [f"share of the total loss in the top {len(d['top'])}",
         f"{100 * d['share_of_total_loss_top']:.1f} %"],
    ] + [[f"rank correlation of final losses with {m}", _num(r)]
         for m, r in d["rank_corr_between_methods"].items()]
    out += [f"{d['focus']}, K = {d['k']}, {d['num_steps']} steps, {d['num_tasks']} test "
            "tasks, query MSE:", ""]
    out += _table(["statistic", "value"], summary)
    out += ["Every learned rate scaled at test time:", ""]
    out += _table(["scale", "mean ± 95 % interval", "median", "p99", "max"],
                  [[s, f"{_num(v['mean'])} ± {_num(v['ci95'])}", _num(v["median"]),
                    _num(v["p99"]), _num(v["max"])] for s, v in d["alpha_scaled"].items()])
    out += ["The tasks with the largest final loss:", ""]
    methods = list(d["top"][0]["query_loss"])
    out += _table(["task", "support x"] + [f"{m} final loss" for m in methods]
                  + [f"{d['focus']} support loss, start → end"],
                  [[t["task"], ", ".join(f"{x:.2f}" for x in t["support_x"])]
                   + [_num(t["query_loss"][m]) for m in methods]
                   + [f"{_num(t['support_loss_steps'][0])} → {_num(t['support_loss_steps'][-1])}"]
                   for t in d["top"]])
    return out


# --- benchmarks -----------------------------------------------------------------------------

def _bench(paths: list[Path]) -> Lines:
    """``benchmarks/bench.py`` files: maml_jax formulations and the PyTorch step, one process."""
    out: Lines = []
    for path in paths:
        d = _load(path)
        meta = d["meta"]
        out += [f"{_rel(path)}:", ""]
        out += _meta(date=meta["date"], machine=d["rows"][0]["device"], versions=_versions(meta),
                     command=_command(meta["argv"]))
        if "xla_flags" in meta:  # files since 2026-12-04 record the environment's XLA_FLAGS
            out += [f"XLA_FLAGS: {_code(meta['xla_flags']) if meta['xla_flags'] else 'none'}.",
                    ""]
        out += _table(
            ["setting", "framework", "compile / warm-up (s)", "meta-steps/s", "tasks/s",
             "step ms (median / min, n)", "memory"],
            [[r["setting"], r["framework"], f"failed: {r['error']}", "-", "-", "-", "-"]
             if "error" in r else
             [r["setting"], r["framework"] + (" (wrong gradients)" if "max_wrong" in
                                              r["framework"] else ""),
              r["compile_s"], r["meta_steps_per_s"], r["tasks_per_s"],
              f"{r['step_ms_median']} / {r['step_ms_min']}, {r['repeats']}", r["memory"]]
             for r in d["rows"]])
    return out


def _explore(paths: list[Path]) -> Lines:
    """``benchmarks/explore_cpu.py`` lines: one process per formulation."""
    rows = [json.loads(line) for line in paths[0].read_text().splitlines() if line.strip()]
    return _table(["conv", "batching", "patches layout", "pool", "unroll", "XLA_FLAGS",
                   "compile (s)", "step ms (median / min)"],
                  [[r["conv"], r["batching"], r.get("variant", "im2col"),
                    r.get("pool", "window") + (" (wrong gradients)" if r.get("pool") ==
                                               "reshape" else ""),
                    r["unroll"], r["xla_flags"] or "-",
                    r["compile_s"], f"{r['step_ms']} / {r['min_ms']}"] for r in rows])


def _memory(paths: list[Path]) -> Lines:
    """``benchmarks/memory.py``: XLA's buffer assignment of the compiled step."""
    out: Lines = []
    for path in paths:
        d = _load(path)
        out += [f"{_rel(path)}:", ""]
        out += _meta(date=d["meta"]["date"], machine=d["meta"]["device"],
                     versions=_versions(d["meta"]), command=_command(d["meta"]["argv"]))
        out += _table(["setting", "inner steps", "remat", "XLA temporaries (MiB)",
                       "total footprint (MiB)", "compile (s)"],
                      [[r["setting"], r["inner_steps"], "on" if r["remat"] else "off",
                        _mib(r["temp_bytes"]), _mib(r["total_bytes"]), r["compile_s"]]
                       for r in d["rows"]])
    return out


def _cost(paths: list[Path]) -> Lines:
    """``benchmarks/cost_maml_vs_mamlpp.py``: the training step of each ablation row."""
    out: Lines = []
    for path in paths:
        d = _load(path)
        out += [f"{_rel(path)}:", ""]
        out += _meta(date=d["date"], machine=d["device"], versions=_versions(d),
                     command=_command(d["argv"]))
        out += _table(["setting", "row", "filters", "epoch", "compile (s)",
                       "step ms (median / min, n)", "time vs MAML", "XLA temporaries (MiB)",
                       "vs MAML"],
                      [[r["setting"], r["row"], r.get("num_filters", "-"), r.get("epoch", "-"),
                        f"{r['compile_s']:.1f}",
                        f"{r['step_ms_median']:.1f} / {r['step_ms_min']:.1f}, {r['n']}",
                        f"{r['time_vs_maml']:.2f}x", _mib(r["temp_bytes"]),
                        f"{r['temp_vs_maml']:.2f}x"] for r in d["rows"]])
    return out


def _check_cell(r: dict | None) -> str:
    if r is None:
        return "-"
    verdict = (("ok" if r["ok"] else "FAILED") + f" at {r['tolerance']}" if r["judged"]
               else "reported only")
    return f"{_err(r['max_rel_error_vs_torch'])} ({r['worst_tensor']}; {verdict})"


def _grad_check(paths: list[Path]) -> Lines:
    """``benchmarks/grad_check.py``: the meta-gradient against PyTorch float64."""
    out: Lines = []
    for path in paths:
        d = _load(path)
        out += [f"{_rel(path)}:", ""]
        out += _meta(date=d["date"], machine=d["device"], versions=_versions(d),
                     command=_command(d["argv"]))
        out += [f"Instance {d['seed']}, MSL weights of epoch {d['epoch']}; overall verdict: "
                f"{'OK' if d['ok'] else 'FAILED'}.", ""]
        rows: dict[tuple[str, str], dict[str, dict]] = {}
        for r in d["rows"]:  # one row per formulation and precision, a column per dtype
            rows.setdefault((r["variant"], r["precision"]), {})[r["dtype"]] = r

        out += _table(["formulation", "precision", "float32 vs PyTorch float64",
                       "float64 vs PyTorch float64", "float32 vs float64 finite differences"],
                      [[variant, precision, _check_cell(by.get("float32")),
                        _check_cell(by.get("float64")),
                        _err(by["float32"]["max_error_vs_fd"])
                        if by.get("float32", {}).get("max_error_vs_fd") else "-"]
                       for (variant, precision), by in rows.items()])
    return out


def _survey(paths: list[Path]) -> Lines:
    """``benchmarks/grad_check.py --survey``: float32 against float64 on random instances."""
    d = _load(paths[0])
    out = _meta(date=d["date"], machine=d["device"], versions=_versions(d),
                command=_command(d["argv"]))
    return out + _table(
        ["instance", "maml_jax float32 (CPU default)", "PyTorch float32",
         "float64 gradient moved by, weights x (1 + 1e-7 N(0,1))", "... x (1 + 1e-6 N(0,1))"],
        [[s["seed"], _err(s["jax_float32_default"]), _err(s["torch_float32"]),
          _err(s["float64_spread_1e-7"]), _err(s["float64_spread_1e-6"])] for s in d["survey"]])


def _consistency(paths: list[Path]) -> Lines:
    """``benchmarks/formulation_consistency.py``: every formulation against the plain one."""
    d = _load(paths[0])
    out = _meta(date=d["date"], machine=d["device"], versions=_versions(d),
                command=_command(d["argv"]))
    tags = {d["plain"]: " (plain)", d["default_cpu"]: " (CPU default)"}
    out += [f"Largest relative error per tensor over instances {d['instances'][0]}.."
            f"{d['instances'][-1]}; overall verdict: {'OK' if d['ok'] else 'FAILED'}.", ""]
    out += _table(["dtype, formulation", "max vs plain", "max vs float64", "median vs float64",
                   "instances > 1e-3 from float64", "instances > 1e-3 from plain"],
                  [[key + tags.get(key.split()[1], ""), _err(s["max_vs_plain"]),
                    _err(s["max_vs_float64"]), _err(s["median_vs_float64"]),
                    f"{s['over_1e-3_vs_float64']} / {s['instances']}",
                    f"{s['over_1e-3_vs_plain']} / {s['instances']}"]
                   for key, s in d["summary"].items()])
    out += [f"float32 on the check instance ({d['check_instance']}):", ""]
    return out + _table(["formulation", "vs plain", "vs float64", "tolerance", "verdict"],
                        [[r["formulation"], _err(r["max_vs_plain"]), _err(r["max_vs_float64"]),
                          r["tolerance"], "ok" if r["ok"] else "FAILED"]
                         for r in d["rows"] if r["instance"] == d["check_instance"]
                         and r["dtype"] == "float32"])


def _rate_divergence(paths: list[Path]) -> Lines:
    """``benchmarks/rate_divergence.py``: which rate updates make sinusoid training diverge."""
    out: Lines = []
    for path in paths:
        d = _load(path)
        out += [f"{_rel(path)}:", ""]
        out += _meta(date=d["date"], versions=_versions(d), command=_command(d["argv"]))
        variants: dict[str, list[dict]] = {}
        for r in d["rows"]:
            variants.setdefault(r["variant"], []).append(r)
        rows = []
        for variant, runs in variants.items():
            diverged = [r for r in runs if r["diverged"]]
            trained = [r for r in runs if not r["diverged"]]
            losses = [r["max_mean_meta_loss"] for r in runs if r["max_mean_meta_loss"] is not None]
            rows.append([variant, runs[0]["num_inner_steps"], runs[0].get("inner_grad_clip", "-"),
                         f"{len(diverged)} / {len(runs)}",
                         ", ".join(str(r["diverged_at"]) for r in diverged) or "-",
                         ", ".join(_num(r["test_mse"]) for r in trained) or "-",
                         _err(max(losses)) if losses else "-"])
        out += _table(["variant (rates : update : inner clip)", "inner steps", "inner clip",
                       "seeds diverged", "at outer step", "test MSE of the others",
                       "largest mean meta loss seen"], rows)
    return out


def _rate_learning(paths: list[Path]) -> Lines:
    """``benchmarks/rate_learning.py``: learned rates at the seed's settings, per family,
    budget and rate update (mean ± std over seeds)."""
    out: Lines = []
    for path in paths:
        d = _load(path)
        out += [f"{_rel(path)}:", ""] if len(paths) > 1 else []
        out += _meta(date=d["date"], versions=_versions(d), command=_command(d["argv"]))
        groups: dict[tuple, list[dict]] = {}
        for r in d["rows"]:
            groups.setdefault((r["family"], r["budget"], r["variant"]), []).append(r)
        rows = []
        for (family, budget, variant), runs in groups.items():
            ok = [r for r in runs if not r["diverged"]]
            values = [100 * r["test_accuracy"] if family == "clusters" else r["test_loss"]
                      for r in ok]
            show = _pct if family == "clusters" else _num
            if len(values) > 1:
                mean, std = statistics.mean(values), statistics.stdev(values)
                score = _pct(mean, std) if family == "clusters" else f"{_num(mean)} ± {_num(std)}"
            else:
                score = "; ".join(f"{show(v)} (one seed)" for v in values) or "-"
            rates = ("-" if not ok else
                     f"{_num(min(r['rates']['min'] for r in ok))} / "
                     f"{_num(statistics.median(r['rates']['median'] for r in ok))} / "
                     f"{_num(max(r['rates']['max'] for r in ok))}")
            first = runs[0]
            rows.append([family, f"{budget:,}", _code(variant),
                         f"{first['rate_update']}, clip {first['inner_grad_clip']}",
                         f"{len(runs) - len(ok)} / {len(runs)}", score, rates])
        out += _table(["family", "outer steps", "granularity:update", "update in force, "
                       "inner clip", "seeds diverged", "held-out after 5 steps (mean ± seed "
                       "std): accuracy, or MSE", "rates min / median / max"], rows)
    return out


def _donation_cost(paths: list[Path]) -> Lines:
    """``benchmarks/donation_cost.py``: a donating step against one that keeps its input."""
    out: Lines = []
    for path in paths:
        d = _load(path)
        out += _meta(date=d["date"], machine=d["processor"], versions=_versions(d),
                     command=_command(d["argv"]))
        out += _table(["outer step", "compile (s)", "step ms (median)", "step ms (min)",
                       "steps timed"],
                      [[r["step"], f"{r['compile_s']:.1f}", f"{r['step_ms_median']:.0f}",
                        f"{r['step_ms_min']:.0f}", r["steps"]] for r in d["rows"]])
        out += [f"Same losses, step for step: {'yes' if d['same_losses'] else 'NO'}. "
                f"`init_meta_state`'s copy of the caller's arrays (once per run): "
                f"{d['init_meta_state_ms']:.1f} ms.", ""]
    return out


def _scale_out(paths: list[Path]) -> Lines:
    """``benchmarks/scale_out.py``: throughput against devices and seeds."""
    out: Lines = []
    for path in paths:
        d = _load(path)
        out += [f"{_rel(path)}:", ""] if len(paths) > 1 else []
        out += _meta(date=d["date"], machine=d["device"] + (", fake devices on the same cores"
                                                            if d.get("fake_devices") else ""),
                     versions=_versions(d), command=_command(d["argv"]))
        out += _table(["devices", "seeds", "compile (s)", "meta-steps/s", "seed-steps/s"],
                      [[p["devices"], p["seeds"], f"{p['compile_s']:.0f}",
                        f"{p['meta_steps_per_s']:.2f}", f"{p['seed_steps_per_s']:.2f}"]
                       for p in d["points"]])
    return out


def _precision_runs(paths: list[Path]) -> Lines:
    """Training runs of one config that differ in their matmul precision: step rate and
    accuracy, with the validation accuracy compared at the last step every run reached."""
    runs = []
    for path in paths:
        run = path.parent
        records = [json.loads(line) for line in
                   (run / "metrics.jsonl").read_text().splitlines()]
        train = [r for r in records if r["kind"] == "train"]
        runs.append((run, _load(path), _load(run / "train_summary.json"),
                     _load(run / "config.json"), train,
                     {r["step"]: r for r in records if r["kind"] == "val"}))
    common = max(set.intersection(*(set(val) for *_, val in runs)))
    rows = []
    for run, res, summary, cfg, train, val in runs:
        # From the first logged chunk on: compilation excluded, validation passes included.
        rate = (train[-1]["step"] - train[0]["step"]) / (train[-1]["time"] - train[0]["time"])
        v = val[common]
        rows.append([_rel(run), summary["matmul_precision"],
                     f"{summary['step']} ({summary['epochs_done']} of {cfg['num_epochs']} "
                     "epochs)", f"{rate:.1f}",
                     _pct(100 * v["val_accuracy"], 100 * v["val_accuracy_ci95"]),
                     _pct(res["best"]["test_accuracy_pct"], res["best"]["test_ci95_pct"])
                     + f" (step {res['best']['step']})",
                     f"{summary['wall_seconds_this_run']:.0f}"])
    header = ["run", "matmul precision", "steps trained", "meta-steps/s",
              f"validation accuracy at step {common}", "test accuracy, best checkpoint",
              "train wall-clock (s)"]
    note = ("Meta-steps/s: wall-clock from the first logged chunk (compilation excluded, "
            "validation passes included). Accuracies: mean ± 95 % interval over the tasks.")
    return [*_table(header, rows), note, ""]


def _profile_summary(d: dict) -> Lines:
    out = _meta(date=d["date"], machine=d["device"], versions=_versions(d),
                command=_command(d["argv"]))
    return out + _table(["setting", "variant", "wall ms per step (traced)",
                         "device busy ms per step", "kernels per step", "GFLOP per step"],
                        [[d["setting"], d["variant"], f"{d['wall_ms_per_step_traced']:.1f}",
                          f"{d['device_busy_ms_per_step']:.1f}",
                          f"{d['device_ops_per_step']:.0f}",
                          f"{d['flops_per_step'] / 1e9:.2f}"]])


def _profile_kinds(d: dict) -> Lines:
    return _table(["kernel", "ms per step", "share", "calls per step", "µs per call"],
                  [[_code(k["op"][:90] + ("..." if len(k["op"]) > 90 else "")),
                    f"{k['ms_per_step']:.2f}", f"{100 * k['share']:.1f} %",
                    f"{k['count_per_step']:.0f}", f"{k['us_per_call']:.1f}"]
                   for k in d["by_kind"]])


def _profile(paths: list[Path]) -> Lines:
    """``benchmarks/profile_step.py``: where the GPU time of one step goes."""
    d = _load(paths[0])
    return [*_profile_summary(d), "Kernels by kind, largest first:", "", *_profile_kinds(d)]


def _cpu_profile(paths: list[Path]) -> Lines:
    """The CPU step's profile, the machine's matmul rate and the XLA flags tried."""
    profile, peak, flags = paths
    d, rates = _load(profile), _load(peak)
    step_s = d["wall_ms_per_step_traced"] / 1e3
    best = max(r["gflops"] for r in rates["rows"] if r["framework"] == "jax")
    out = _profile_summary(d)
    out += [f"The step's rate: {d['flops_per_step'] / 1e9 / step_s:.0f} GFLOP/s "
            f"({d['flops_per_step'] / 1e9:.1f} GFLOP in {1e3 * step_s:.0f} ms, traced); the "
            f"machine's float32 matmul: {best:.0f} GFLOP/s (JAX).", ""]
    out += _meta(date=rates["date"], machine=rates["processor"], versions=_versions(rates),
                 command=_command(rates["argv"]))
    out += _table(["matmul", "n", "GFLOP/s"],
                  [[r["framework"], r["n"], r["gflops"]] for r in rates["rows"]])
    lines = [json.loads(line) for line in flags.read_text().splitlines() if line.strip()]
    out += _table(["XLA_FLAGS", "order", "compile (s)", "step ms (median / min)"],
                  [[_code(r["xla_flags"]) if r["xla_flags"] else "none",
                    "first" if r["first_order"] else "second", r["compile_s"],
                    f"{r['step_ms']} / {r['min_ms']}"] for r in lines])
    return [*out, "Kinds of ops in the profile, largest first:", "", *_profile_kinds(d)]


def _task_groups(paths: list[Path]) -> Lines:
    """Two ``profile_step.py`` files of one step, without and with task groups (how many
    of the CPU's cores its ops keep busy), then ``bench.py``'s timings of group counts."""
    *profiles, counts = paths
    rows = []
    out: Lines = []
    for path in profiles:
        d = _load(path)
        out += _meta(date=d["date"], machine=d["device"], versions=_versions(d),
                     command=_command(d["argv"]))
        # The op kinds under the runtime's own events (which contain them: counted twice).
        ops_ms = sum(k["ms_per_step"] for k in d["by_kind"]
                     if not k["op"].startswith(("ThunkExecutor", "SlinkyThreadPool")))
        wall = d["wall_ms_per_step_traced"]
        rows.append([d["variant"], f"{d['compile_s']:.1f}", f"{wall:.1f}",
                     f"{d['device_ops_per_step']:.0f}", f"{ops_ms:.0f}", f"{ops_ms / wall:.2f}"])
    out += _table(["variant", "compile (s)", "wall ms per step (traced)", "ops per step",
                   "ms in ops per step (top kinds)", "cores busy (ms in ops / wall)"], rows)
    return [*out, "The number of groups, timed round-robin in one process:", "",
            *_bench([counts])]


def _first_order_forms(paths: list[Path]) -> Lines:
    """``benchmarks/first_order_forms.py``, then ``bench.py``'s first-order rows."""
    forms, step = paths
    d = _load(forms)
    out = _meta(date=d["date"], machine=d["processor"], versions=_versions(d),
                command=_command(d["argv"]))
    rows = []
    for r in d["rows"]:
        closed, stopped = r["median_ms"]["closed form"], r["median_ms"]["stopped loop"]
        rows.append([r["setting"], f"{closed:.1f} / {r['min_ms']['closed form']:.1f}",
                     f"{stopped:.1f} / {r['min_ms']['stopped loop']:.1f}",
                     f"{100 * (1 - closed / stopped):.0f} %",
                     f"{r['max_diff_over_largest_entry']:.1e}"])
    out += _table(["setting", "closed form ms (median / min)", "stopped loop ms (median / min)",
                   "closed form faster by", "largest difference / largest entry"], rows)
    return [*out, "The whole first-order step with the closed form, against PyTorch (same "
            "process, round-robin):", "", *_bench([step])]


# --- the registry -----------------------------------------------------------------------------

_EXP = "experiments/results/"
_BENCH = "benchmarks/results/"
_GPU = _BENCH + "gpu_h200_20261126/"
_GPU2 = _BENCH + "gpu_h200_20261204/"

SECTIONS: tuple[Section, ...] = (
    Section("The paper's table", "paper numbers (full runs)", (_EXP + "**/config.json",),
            _paper_table,
            about="The MAML++ paper's cells in the priority order of "
                  "`experiments/configs/paper_table.py`, each with the paper's number and "
                  "schedule from its config, and the runs of that config whose files are "
                  "in this repository. A run counts as full only where its config agrees "
                  "with the cell's in every schedule key (`config_lib.SCHEDULE_KEYS`, the "
                  "definition `experiments.reproduce` labels its runs by); otherwise the "
                  "differences are listed. Command: `python -m experiments.reproduce`. "
                  "Between GPU windows the table's runs are committed in "
                  "`experiments/results/paper_table/state/` (latest checkpoint and result "
                  "files; `experiments.table_state`): their rows show how far each got."),
    Section("Omniglot 5-way 1-shot MAML++ on a GPU", "reduced schedule",
            (_EXP + "omniglot_5w1s_mamlpp_gpu_h200_run*/test_results.json",),
            functools.partial(_training_runs, paper=True),
            about="The paper's 5-way 1-shot MAML++ recipe at full size (64 filters, "
                  "second order, per-step batch norm, learned per-layer per-step rates) on "
                  "fewer epochs than the paper, the cosine annealing and the multi-step loss "
                  "scaled to those epochs; 600 fixed test tasks. Each run was trained and "
                  "evaluated inside one device call of `benchmarks/gpu_session.sh` "
                  "(`--config=experiments/configs/omniglot_5w1s_mamlpp.py:gpu_short`, "
                  "with `num_epochs` fitted to the call's budget). `conv auto` was `lax.conv` "
                  "on GPUs then (`patches` since 2026-12-04). The paper column is the "
                  "full run's number, for orientation only.",
            where="One NVIDIA H200, jax 0.11.2, 2026-11-26 (the run files carry no date)."),
    Section("TF32 against \"highest\" precision in training (GPU)", "reduced schedule",
            (_EXP + "omniglot_5w1s_mamlpp_gpu_h200_precision/*/test_results.json",),
            _precision_runs,
            about="`experiments/configs/omniglot_5w1s_mamlpp.py:gpu_short` with 4 epochs "
                  "(MSL over the first), stopped by `--max-minutes 1.2`, once at "
                  "`JAX_DEFAULT_MATMUL_PRECISION=highest` and once at the default (TF32 "
                  "convolutions and matmuls), each evaluated on the 600 test tasks "
                  "(stage q3 of `benchmarks/gpu_queue.sh` as of 2026-12-04; log "
                  "`benchmarks/results/gpu_h200_20261204/call2_q3.log`). `lax.conv` "
                  "convolutions (the GPU "
                  "default of the time). Far from the paper's schedule: compare the two rows "
                  "only.",
            where="One NVIDIA H200, jax 0.11.2, 2026-12-04 (logs in "
                  "`benchmarks/results/gpu_h200_20261204/`)."),
    Section("Omniglot 5-way 1-shot: MAML, MAML++, Meta-SGD, ANIL", "smoke scale",
            (_EXP + "learned_rates_omniglot_smoke/*/test_results.json",), _training_runs,
            about="Each config's `:smoke` variant with three seeds trained together as one "
                  "population: `python -m experiments.train --config=experiments/configs/"
                  "omniglot_5w1s_<maml|mamlpp>.py:smoke [--config.lr_granularity=meta_sgd | "
                  "--config.inner_loop=head] --num-seeds 3 --workdir runs/issue21_omniglot/"
                  "<method> --data-dir ../shared/data/omniglot`, then `python -m "
                  "experiments.evaluate` on the workdir. Far from converged by design: not "
                  "comparable with any published number. `metasgd_log_10x` is the Meta-SGD "
                  "run again with the per-weight rate update that is the default since "
                  "2026-12-06 (`--config.name=issue30_metasgd_smoke`).",
            where=f"{CPU_XEON}, jax 0.10.2, 2026-12-03, two runs at a time (the files carry "
                  f"no date); `metasgd_log_10x`: {CPU_EPYC_ALONE}, jax 0.10.2, 2026-12-06, "
                  "one run at a time."),
    Section("Sinusoid: the MAML++ claims grid", "paper budget, this study's own ablation",
            (_EXP + "study_sinusoid/study.json",), _study,
            about="`experiments/configs/study_sinusoid.py`: each method trained with the MAML "
                  "paper's sinusoid budget and optimiser, K support points in training and "
                  "test, evaluated on the same fixed test tasks for up to twice the trained "
                  "steps (N); query MSE pooled over the seeds. The MAML++ paper has no "
                  "sinusoid experiment. Overshoot: the query loss after step t+1 is more than "
                  "5 % above the loss after step t, for some t < N.",
            where=f"{CPU_XEON}, jax 0.10.2."),
    Section("Sinusoid: learned inner rates (MAML, MAML++, Meta-SGD, per-weight, ANIL)",
            "reduced budget", (_EXP + "study_learned_rates/study.json",), _study,
            about="`experiments/configs/study_learned_rates.py`: fewer outer steps than the "
                  "MAML paper's sinusoid runs, per-weight rates with their library defaults "
                  "(the `log_10x` rate update since 2026-12-06, inner-gradient clip 100), "
                  "MAML++ with this repository's sinusoid recipe. Query MSE after N steps "
                  "pooled over the seeds. Re-run whole on 2026-12-06 for the new per-weight "
                  "default: the other rows reproduced bit for bit (the per-weight rows of "
                  "2026-12-04, with the `log` update, are in git history: Meta-SGD 0.502 / "
                  "0.286, Meta-SGD-5 0.246 / 0.068, per weight and step 0.267 / 0.068 at "
                  "K = 5 / 10).",
            where=f"{CPU_EPYC_ALONE}, jax 0.10.2, the date in study.json."),
    Section("The MAML family on one protocol: sinusoid", "reduced budget",
            (_EXP + "study_algorithms/study.json",), _study,
            about="`experiments/configs/study_algorithms.py`: MAML, first-order MAML, MAML++, "
                  "Meta-SGD, ANIL, BOIL, Reptile and iMAML with the same budget (20,000 outer "
                  "steps, meta-batch 25, Adam 1e-3), the same 5 inner steps at alpha 0.01, "
                  "the same tasks and seeds (3); query MSE after N steps pooled over the "
                  "seeds that finished, the last column each seed's training wall clock. "
                  "Every method at its published or the library's default settings, none "
                  "tuned; not comparable with any paper's numbers. Meta-SGD takes 5 steps "
                  "(its cells are the learned-rates grid's Meta-SGD-5 and reproduce it bit "
                  "for bit). **iMAML diverged in every seed**: five plain gradient steps at "
                  "0.01 do not solve its proximal inner problem for this MLP, whose inner "
                  "loop blows up where the loss is sharp (curvature above 2 / alpha); MAML's "
                  "meta-gradient, through the inner steps, steers away from such regions, "
                  "while the implicit gradient, exact at the proximal minimiser (tests: "
                  "closed forms, and finite differences of a tanh MLP at convergence), "
                  "assumes the minimiser was reached and damps the sharp directions "
                  "instead. A lambda of 20, 50 or 100 diverged too (one seed, 600 steps); "
                  "with an inner-gradient clip of 10 the runs stayed finite but the meta "
                  "loss rose (8 to 28 in 2,700 steps at lambda 20).",
            where=f"{CPU_EPYC_ALONE}, jax 0.10.2, the date in study.json; one run at a time, "
                  "but tests ran beside some of them (the wall clock is indicative)."),
    Section("The MAML family on one protocol: Omniglot 5-way 1-shot", "reduced scale",
            (_EXP + "study_algorithms_omniglot/study.json",), _study,
            about="`experiments/configs/study_algorithms_omniglot.py`: the same eight methods "
                  "at a 2-core CPU's scale: Conv4 with 16 filters, 600 meta-iterations, "
                  "meta-batch 8, 5 inner steps for every method, shared batch norm, the best "
                  "of the checkpoints on 100 validation tasks tested on 600 tasks "
                  "(transductive batch norm), 3 seeds; each method MAML's settings changed "
                  "only where it differs. Far from converged by design and untuned: not "
                  "comparable with any published number (the papers report 97.7-99.5 % at "
                  "full scale). Wall clock: training with its validations and checkpoints.",
            where=f"{CPU_EPYC_ALONE}, jax 0.10.2, the date in study.json; one run at a time "
                  "(a test ran beside the first two)."),
    Section("Omniglot ablation (the paper's Table 1 rows)", "reduced scale",
            (_EXP + "study_omniglot_ablation_cpu/study.json",), _study,
            about="`experiments/configs/study_omniglot_ablation_cpu.py`: 5-way 1-shot instead "
                  "of the paper's 20-way, 16 filters, a fraction of the paper's iterations, "
                  "the epoch schedules scaled down; one best checkpoint, no ensemble. "
                  "`MAML-equal-time` trains MAML for MAML++'s wall-clock. Not comparable with "
                  "the paper's numbers (the full-size grid is "
                  "`study_omniglot_ablation.py`, not run yet).",
            where=f"{CPU_XEON}, jax 0.10.2."),
    Section("Omniglot 5-way 1-shot smoke runs, studied", "smoke scale",
            (_EXP + "study_omniglot_smoke/study.json",), _study,
            about="The `:smoke` variants of `omniglot_5w1s_maml.py` and "
                  "`omniglot_5w1s_mamlpp.py` (one seed each), evaluated by "
                  "`experiments/study.py` for up to twice their trained steps.",
            where=f"{CPU_XEON}, jax 0.10.2."),
    Section("Sinusoid MAML++: the tasks behind a wide interval", "paper budget",
            (_EXP + "sinusoid_outliers/outliers.json",), _outliers,
            about="`python -m experiments.sinusoid_outliers` re-trains "
                  "`sinusoid_paper.py` and looks at the test tasks with the largest final "
                  "loss: their support points, their inner-loop trajectories, and the effect "
                  "of scaling every learned rate at test time.",
            where=f"{CPU_XEON}, jax 0.10.2."),
    # Benchmarks
    Section("Outer step, maml_jax vs every PyTorch formulation (CPU)", "benchmark",
            (_BENCH + "cpu_task_groups.json", _BENCH + "cpu_torch_peers.json"), _bench,
            part="Benchmarks",
            about="The MAML++ Omniglot outer step (meta-batch 8, 5 inner steps, 64 filters, "
                  "MSL, learned per-layer per-step rates, per-step BN, Adam), second and "
                  "first order, 5-way and 20-way 1-shot, in maml_jax (its CPU defaults) and "
                  "in the three PyTorch formulations of the same work "
                  "(`benchmarks/torch_maml.py`: tasks in sequence as the reference code, "
                  "`torch.vmap` over tasks with `torch.func.grad` inner steps, and that under "
                  "`torch.compile`, whose compile column is its first step), 2 torch "
                  "threads, timed round-robin in one process on random data of the real "
                  "shapes. Memory is the host RSS increase: indicative only. The newer file "
                  "also times `MetaConfig(task_groups=2)` (`groups=2`, next section) and "
                  "`vjp`, the im2col convolution with a hand-written derivative (its "
                  "input's gradient as a convolution again, checked to second order in "
                  "`tests/benchmarks/test_bench_conv_layouts.py`): slower at second order, "
                  "not kept. Its `torch.compile` compile column is short because inductor's "
                  "on-disk cache was warm from the earlier run (cold: about 110 s, the older "
                  "file).",
            where=CPU_EPYC_ALONE),
    Section("Task groups: the step's tasks as independent parts (CPU)", "benchmark",
            (_BENCH + "profile_cpu_5w1s_ungrouped.json",
             _BENCH + "profile_cpu_5w1s_groups2.json",
             _BENCH + "cpu_task_groups_count.json"), _task_groups,
            part="Benchmarks",
            about="The default 5-way 1-shot second-order step profiled as one batch of 8 "
                  "tasks and as `MetaConfig(task_groups=2)`, two independent batches of 4 "
                  "(`benchmarks/profile_step.py`). XLA:CPU's runtime keeps about 1.2 of the "
                  "2 cores busy with the single batch; the two groups give it independent "
                  "work for both (1.4 busy), so the step takes less wall time although its "
                  "ops take more time in all (smaller ops, two threads sharing the caches). "
                  "Timings of both against PyTorch: the section above. Then 1, 2 and 4 "
                  "groups of the second-order step: 2 is the most consistent gain on 2 "
                  "cores, 4 no better, and the compile time grows with the program (about "
                  "1.7x with 2 groups, 3x with 4). The gain varies between runs on this "
                  "machine (4-12 % at second order with 2 groups over the files here).",
            where=f"{CPU_EPYC_ALONE}, jax 0.10.2, 2026-12-06."),
    Section("First order: the closed form against reverse mode (CPU)", "benchmark",
            (_BENCH + "cpu_first_order_forms.json", _BENCH + "cpu_first_order_closed_form.json"),
            _first_order_forms, part="Benchmarks",
            about="First-order MAML++ (64 filters, meta-batch 8, 5 inner steps, MSL, "
                  "per-layer per-step rates, per-step BN): its meta-gradient in closed form "
                  "(one forward scan of support and query gradients, the library's since "
                  "2026-12-06) against reverse mode through the inner loop with its "
                  "gradients stopped (the earlier form), timed in one process; then the "
                  "whole step against PyTorch's first-order formulations. The closed form is "
                  "a few per cent faster; PyTorch with tasks in sequence stays ahead at "
                  "first order.",
            where=f"{CPU_EPYC_ALONE}, jax 0.10.2, torch 2.13.0+cpu, 2026-12-06."),
    Section("Convolution layouts of the CPU step", "benchmark",
            (_BENCH + "cpu_conv_layouts.json",), _bench, part="Benchmarks",
            about="The default 5-way 1-shot second-order step (64 filters, meta-batch 8) with "
                  "its 3x3 convolutions written four ways, each the same convolution "
                  "(`tests/benchmarks/test_bench_conv_layouts.py`): the library's im2col "
                  "(nine shifted views concatenated, one matmul; `auto`), `rows3` (a 3-wide "
                  "im2col and three matmuls), `shift9` (nine matmuls of shifted views, no "
                  "patches tensor) and `outshift` (one matmul with the nine taps side by "
                  "side, then nine shifted views of its output summed), timed round-robin "
                  "with the vmapped PyTorch step as the reference. The profile's slice, pad "
                  "and concatenate fusions suggested fewer data movements per convolution; "
                  "every alternative is slower: the library's layout stays.",
            where=f"{CPU_EPYC_ALONE}, jax 0.10.2, torch 2.13.0+cpu, 2026-12-06."),
    Section("Outer step, maml_jax vs PyTorch tasks in sequence (CPU, before 2026-12-06)",
            "benchmark",
            tuple(_BENCH + f"cpu_fixed_{n}.json" for n in ("5w1s", "20w1s", "5w1s_first")),
            _bench, part="Benchmarks",
            about="The MAML++ Omniglot outer step (meta-batch 8, 5 inner steps, 64 filters, "
                  "MSL, learned per-layer per-step rates, per-step BN, Adam) in maml_jax and "
                  "in the PyTorch step of the same work (`benchmarks/torch_maml.py`), timed "
                  "round-robin in one process on random data of the real shapes. Variants "
                  "are `conv:batching:unroll[:pool=...]`; `pool=max_wrong` is the withdrawn "
                  "pool (wrong gradients), timed only to show what the correct one costs. "
                  "Memory is the host RSS increase: indicative only."),
    Section("Scaling with the meta-batch (CPU)", "benchmark",
            (_BENCH + "cpu_fixed_scaling_batch.json",), _bench, part="Benchmarks",
            about="Plot: `benchmarks/results/cpu_fixed_scaling_batch.png`."),
    Section("Memory against inner steps, with and without remat (CPU)", "benchmark",
            (_BENCH + "cpu_fixed_memory_remat_20w1s.json",), _memory, part="Benchmarks",
            about="XLA's buffer assignment of the compiled step (arguments, outputs and "
                  "temporaries): exact, and independent of other processes."),
    Section("MAML vs MAML++ step cost", "benchmark",
            (_BENCH + "cost_maml_vs_mamlpp_cpu*.json", _GPU + "cost_maml_vs_mamlpp.json"),
            _cost, part="Benchmarks",
            about="The training step of `experiments` for the rows of the ablation, second "
                  "order; rows timed round-robin so they share any load. Memory: XLA's "
                  "temporaries of the compiled step. `epoch` past the MSL phase times the "
                  "final-step-only loss."),
    Section("Outer step on a GPU, maml_jax vs PyTorch", "benchmark",
            (_GPU + "bench_defaults_vs_torch.json", _GPU + "bench_conv_variants.json"),
            _bench, part="Benchmarks",
            about="Float32 at each framework's default precision (TF32 allowed for "
                  "convolutions), median of timed calls after a compile call; `x10/call` "
                  "runs ten outer steps per call (`jit_train_steps`); `auto` convolutions were "
                  "`lax.conv` on GPUs then (`patches` since 2026-12-04). The two files come "
                  "from two device calls on two machines of the same kind. Memory: the "
                  "process-wide device peak (JAX's cannot be reset between rows)."),
    Section("XLA command buffers with loops (GPU)", "benchmark",
            (_GPU2 + "q2c_command_buffers_20w1s.json",
             _GPU2 + "q2c_no_command_buffers_20w1s.json"), _bench, part="Benchmarks",
            about="The default 20-way 1-shot step (`lax.conv`, the GPU default of the time) "
                  "with the inner scan at unroll 1 or fully unrolled (`true`), with and "
                  "without XLA command buffers that include loops (`WHILE`, `CONDITIONAL`); "
                  "TF32 (default precision). Two device calls on the same machine, one after "
                  "the other."),
    Section("Scale-out: populations of seeds on a GPU", "benchmark",
            (_GPU2 + "q2a_population_20w1s.json", _GPU2 + "q2b_population_5w1s.json"),
            _scale_out, part="Benchmarks",
            about="MAML++ Omniglot, Conv4 64 filters, meta-batch 8, 10 meta-steps per call, "
                  "one device; S seeds trained as one population (`population_train_steps`): "
                  "seed-steps/s = meta-steps/s x S. `lax.conv` (the GPU default of the time), "
                  "unroll 1, TF32."),
    Section("Where the GPU time goes", "benchmark", (_GPU + "profile_20w1s.json",), _profile,
            part="Benchmarks",
            about="The default step under the JAX profiler: the traced wall time includes "
                  "the tracer's overhead; device time, kernel count and XLA's FLOP count "
                  "per step do not."),
    Section("Where the CPU time goes, and the machine's ceiling", "benchmark",
            (_BENCH + "profile_cpu_5w1s.json", _BENCH + "cpu_peak.json",
             _BENCH + "cpu_xla_flags_20261206.jsonl"), _cpu_profile, part="Benchmarks",
            about="The default 5-way 1-shot second-order step under the JAX profiler "
                  "(`benchmarks/profile_step.py`; on the CPU the \"device\" ops are XLA's "
                  "thunks on the host threads, nested ones counted twice), the float32 "
                  "matmul rate of the same machine (`benchmarks/cpu_peak.py`), and XLA:CPU "
                  "flags tried on the step, one process each (`XLA_FLAGS=... python "
                  "benchmarks/explore_cpu.py --setting omniglot_5w1s --repeats 5 "
                  "[--first-order]`).", where=f"{CPU_EPYC_ALONE}, 2026-12-06."),
    Section("Scale-out: devices and populations of seeds (CPU)", "benchmark",
            (_BENCH + "scale_out_cpu.json",), _scale_out, part="Benchmarks",
            about="MAML++ Omniglot 5-way 1-shot, 16 filters, meta-batch 8. Fake CPU devices "
                  "share the same cores, so they show overhead, not speed-up."),
    Section("Meta-gradient against the PyTorch reference", "correctness check",
            (_BENCH + "grad_check_cpu.json", _GPU + "grad_check.json",
             _GPU2 + "q1_grad_check_patches_gpu.json"), _grad_check,
            part="Correctness",
            about="The full-size second-order meta-gradient (Omniglot Conv4, 64 filters, "
                  "5 inner steps, MSL, rates and BN weights different at every step, 2 "
                  "tasks) against the MAML++ formulation in PyTorch float64, per tensor; "
                  "formulations are `conv:batching:unroll:remat:pool`."),
    Section("float32 meta-gradients on random instances", "correctness check",
            (_BENCH + "grad_check_survey_cpu.json",), _survey, part="Correctness",
            about="Why float32 is judged on one instance: the largest relative error per "
                  "tensor against PyTorch float64 on random instances, and how far the "
                  "float64 gradient itself moves when every weight is perturbed."),
    Section("Formulation consistency", "correctness check",
            (_BENCH + "formulation_consistency_cpu.json",), _consistency, part="Correctness",
            about="Every convolution x task batching x unroll, in float64 and float32, "
                  "against the plain formulation (`xla`, `lax.map`, unroll 1) and float64."),
    Section("What owning the state costs: donation", "benchmark, full-size Conv4 step",
            (_BENCH + "donation_cost_cpu.json",), _donation_cost, part="Benchmarks",
            about="The MAML++ Conv4 outer step (64 filters, 5-way 1-shot, meta-batch 8, 5 "
                  "inner steps, second order, the CPU defaults) jitted with the state "
                  "donated (`jit_outer_step`) and without (the facade's step, which keeps "
                  "what it handed out valid), compiled apart and timed in turns in one "
                  "process, results waited for.", where=CPU_EPYC_ALONE),
    Section("Learned rates at the seed's settings", "reduced budget",
            (_BENCH + "rate_learning_cpu.json",), _rate_learning,
            about="The seed's quick start as written, `ModelAgnosticMetaLearning(model, "
                  "inner_lr=0.01, outer_lr=0.001, inner_steps=5, plus_plus=True)`, meta-batch "
                  "16, with each granularity and rate update (`auto` is the library default "
                  "of the granularity), trained for 300 and 3,000 outer steps and scored on "
                  "600 held-out tasks after 5 inner steps: `clusters` is 5-way 2-shot "
                  "classification of Gaussian clusters in 16 dimensions (an MLP 16-32-32-5; "
                  "chance is 20 %), `sinusoid` the MAML paper's 5-shot regression. Three "
                  "seeds each. The question is whether per-weight rates learn as per-layer "
                  "ones do, not how good either is: no paper trains this short.",
            where=f"{CPU_EPYC_ALONE}, one run at a time, other work on the machine.",
            part="Correctness"),
    Section("Learned rates: divergence of the rate updates", "reduced budget",
            (_BENCH + "rate_divergence_cpu_*.json",), _rate_divergence, part="Correctness",
            about="The MAML paper's sinusoid regressor, K = 5, meta-batch 25, Adam, "
                  "final-step loss, rates starting at 0.01; test MSE on the fixed test tasks "
                  "after the trained number of steps. Variants: "
                  "`granularity:rate update[:inner-gradient clip]`; files `a`/`b` predate "
                  "the inner-gradient clip, `c`/`d` measure it, `e` measures the per-weight "
                  "default since 2026-12-06 (`auto`: `log_10x` and the clip).",
            where=f"`a`-`d`: {CPU_XEON}, two runs at a time; `e`: {CPU_EPYC_ALONE}, one "
                  "run at a time."),
    # History: correct steps of older formulations, kept as the record of the CPU study.
    Section("Before / after and formulations of the CPU step (older defaults)", "benchmark, "
            "superseded formulations",
            tuple(_BENCH + f"{n}.json" for n in (
                "cpu_before_after", "cpu_formulations", "cpu_formulations2",
                "cpu_formulations3", "cpu_onednn", "cpu_20w1s", "cpu_5w1s_first",
                "cpu_scaling_steps", "cpu_miniimagenet", "cpu_final_5w1s", "cpu_final_20w1s")),
            _bench, part="History",
            about="Measured before the max-pool change, with `nn.max_pool` (correct "
                  "gradients) and the library defaults of the time (named in each row), on "
                  "a machine shared with other jobs: compare within a table only. The "
                  "tables taken with the withdrawn pool are not shown (CHANGELOG, "
                  "2026-11-26).", where=CPU_EPYC),
    Section("Exploratory single-process runs (older formulations)", "benchmark, superseded "
            "formulations", (_BENCH + "explore_cpu.jsonl",), _explore, part="History",
            about="`python benchmarks/explore_cpu.py --conv C --batching B --unroll U "
                  "[--variant V] [--pool P]`, one process each, while other jobs loaded the "
                  "machine: compare within this table only.", where=CPU_EPYC),
    Section("Memory against inner steps (older formulations)", "benchmark, superseded "
            "formulations", (_BENCH + "cpu_memory_remat_20w1s*.json",), _memory,
            part="History",
            about="The first file ran with the inner loop unrolled under remat too; "
                  "`unroll=\"auto\"` has since fallen back to 1 with `remat=True`.",
            where=CPU_EPYC),
)

PARTS = {
    "Experiments": "Training runs and studies. The scale label of each section says how "
                   "far it is from the paper's experiment.",
    "Benchmarks": "Step time and memory; the commands rerun them.",
    "Correctness": "The checks that make the timings worth reading.",
    "History": "Older formulations' measurements, kept as the record of how the CPU "
               "defaults were chosen; they time correct steps that are no longer the default.",
}


# --- the page, the README headline, the command line ----------------------------------------

def render_page() -> str:
    """The Markdown of ``docs/results.md``, from the result files.

    Returns:
        The page's text.
    """
    out = ["# Results", "",
           "<!-- Generated by `python -m experiments.results_page` from the result files; "
           "do not edit. -->", "",
           "Every number on this page is read from a result file committed with the code "
           "(`experiments/results/`, `benchmarks/results/`); after adding or replacing one, "
           "run `python -m experiments.results_page`. Each section names its files, the "
           "command, the machine and date, and a **scale label**: *smoke scale* and "
           "*reduced scale* runs are far smaller than the paper's experiments and are never "
           "comparable with its numbers; *paper numbers* are the published results of "
           "full runs, quoted from the configs. History of withdrawn numbers: "
           "[Changelog](changelog.md).", ""]
    for part, blurb in PARTS.items():
        out += [f"## {part}", "", blurb, ""]
        for section in SECTIONS:
            if section.part != part:
                continue
            paths = section.paths()
            out += [f"### {section.title}", "", f"**Scale: {section.scale}.** {section.about}",
                    ""]
            if section.where:
                out += [f"Machine and date: {section.where}", ""]
            out += ["Files: " + ", ".join(_rel(p) for p in paths) + ".", ""]
            out += section.build(paths)
    return "\n".join(out).rstrip() + "\n"


def _row(path: str, **keys: str) -> dict:
    d = _load(ROOT / path)
    rows = d["rows"]
    return next(r for r in rows if all(r.get(k) == v for k, v in keys.items()))


def _per_weight_divergence() -> tuple[int, int, dict[int, list[bool]]]:
    """Diverged and total per-weight-rate runs: the learned-rates study at the defaults,
    and ``benchmarks/rate_divergence.py``'s per-weight runs with the reference update."""
    grid = importlib.import_module("experiments.configs.study_learned_rates")
    per_weight = {name for name, m in grid.methods().items()
                  if m["lr_granularity"] in ("meta_sgd", "parameter")}
    study = _load(ROOT / _EXP / "study_learned_rates" / "study.json")
    done = sum(len(g["seeds"]) for g in study["groups"].values() if g["method"] in per_weight)
    # A failed run's workdir is named <method>_K<k>_s<seed>.
    failed = sum(f["workdir"].rsplit("/", 1)[-1].rsplit("_", 2)[0] in per_weight
                 for f in study["failed"])
    ref = [r for path in sorted(ROOT.glob(_BENCH + "rate_divergence_cpu_*.json"))
           for r in _load(path)["rows"]
           if r["variant"].split(":")[0] in ("per_parameter", "meta_sgd", "meta_sgd_1")
           and r["variant"].split(":")[1:] == ["reference"]]
    by_steps = {n: [r["diverged"] for r in ref if r["num_inner_steps"] == n]
                for n in sorted({r["num_inner_steps"] for r in ref}, reverse=True)}
    return failed, done + failed, by_steps


def _rate_learning_accuracy(budget: int) -> dict[str, str]:
    """``benchmarks/rate_learning.py``'s held-out cluster accuracy per variant at ``budget``
    outer steps: mean ± std over seeds."""
    rows = [r for r in _load(ROOT / _BENCH / "rate_learning_cpu.json")["rows"]
            if r["family"] == "clusters" and r["budget"] == budget and not r["diverged"]]
    by_variant: dict[str, list[float]] = {}
    for r in rows:
        by_variant.setdefault(r["variant"], []).append(100 * r["test_accuracy"])
    return {v: _pct(statistics.mean(a), statistics.stdev(a)) for v, a in by_variant.items()}


def _fastest_torch(path: str, setting: str) -> dict:
    """The PyTorch row of ``setting`` with the shortest median step (failed ones aside)."""
    rows = [r for r in _load(ROOT / path)["rows"] if r["setting"] == setting
            and r["framework"].startswith("torch") and "error" not in r]
    return min(rows, key=lambda r: r["step_ms_median"])


def render_headline() -> str:
    """The README's headline table (between the markers), from the result files.

    Returns:
        The Markdown between ``HEADLINE_BEGIN`` and ``HEADLINE_END``.
    """
    gpu_run = _EXP + "omniglot_5w1s_mamlpp_gpu_h200_run2/"
    cfg, res = _load(ROOT / gpu_run / "config.json"), _load(ROOT / gpu_run / "test_results.json")
    paper_epochs = importlib.import_module(
        "experiments.configs.omniglot_5w1s_mamlpp").get_config().num_epochs
    cpu = _BENCH + "cpu_task_groups.json"
    jax_cpu = _row(cpu, setting="omniglot_5w1s second-order", framework="jax auto:auto:auto")
    grouped = {setting: _row(cpu, setting=setting, framework="jax auto:auto:auto:groups=2")
               for setting in ("omniglot_5w1s second-order", "omniglot_20w1s second-order",
                               "omniglot_20w1s first-order")}
    torch_cpu = _fastest_torch(cpu, "omniglot_5w1s second-order")
    seq_cpu = _row(cpu, setting="omniglot_5w1s second-order",
                   framework="torch sequential (2 threads)")
    jax_cpu20 = _row(cpu, setting="omniglot_20w1s second-order", framework="jax auto:auto:auto")
    jax_cpu20_first = _row(cpu, setting="omniglot_20w1s first-order",
                           framework="jax auto:auto:auto")
    torch_cpu20 = _fastest_torch(cpu, "omniglot_20w1s second-order")
    torch_cpu20_first = _fastest_torch(cpu, "omniglot_20w1s first-order")
    gpu = _GPU + "bench_defaults_vs_torch.json"
    jax_gpu = _row(gpu, setting="omniglot_20w1s second-order",
                   framework="jax auto:auto:auto x10/call")
    torch_gpu = next(r for r in _load(ROOT / gpu)["rows"]
                     if r["setting"] == "omniglot_20w1s second-order"
                     and r["framework"].startswith("torch"))
    check = _load(ROOT / _BENCH / "grad_check_cpu.json")["rows"]
    worst = {dt: max(r["max_rel_error_vs_torch"] for r in check if r["dtype"] == dt)
             for dt in ("float32", "float64")}
    diverged, total, reference = _per_weight_divergence()
    reference_text = ", ".join(f"{sum(runs)} of {len(runs)} with {n} inner step"
                               + ("s" if n > 1 else "") for n, runs in reference.items())
    rows = [
        ["Omniglot 5-way 1-shot MAML++, test accuracy (NVIDIA H200)",
         _pct(res["best"]["test_accuracy_pct"], res["best"]["test_ci95_pct"]),
         f"**reduced schedule**: {cfg['num_epochs']} of the paper's {paper_epochs} epochs; "
         f"the paper's full run: {_pct(*cfg['paper_test_accuracy'])}"],
        ["Omniglot 5w1s second-order outer step, 2-core CPU (median): defaults (with "
         "`MetaConfig(task_groups=2)`)",
         f"{jax_cpu['step_ms_median']:.0f} ms "
         f"({grouped['omniglot_5w1s second-order']['step_ms_median']:.0f} ms)",
         f"the fastest PyTorch formulation measured there, {torch_cpu['framework']}: "
         f"{torch_cpu['step_ms_median']:.0f} ms (tasks in sequence, the reference code's "
         f"way: {seq_cpu['step_ms_median']:.0f} ms)"],
        ["Omniglot 20w1s outer step, 2-core CPU (median): second order / first order, "
         "defaults (with `task_groups=2`)",
         f"{jax_cpu20['step_ms_median']:.0f} / {jax_cpu20_first['step_ms_median']:.0f} ms "
         f"({grouped['omniglot_20w1s second-order']['step_ms_median']:.0f} / "
         f"{grouped['omniglot_20w1s first-order']['step_ms_median']:.0f} ms)",
         f"the fastest PyTorch formulation for each: {torch_cpu20['framework']} "
         f"{torch_cpu20['step_ms_median']:.0f} ms / {torch_cpu20_first['framework']} "
         f"{torch_cpu20_first['step_ms_median']:.0f} ms"
         + "".join(f" (**PyTorch is faster at {order} order** on this CPU)"
                   for order, ours, theirs in (("second", jax_cpu20, torch_cpu20),
                                               ("first", jax_cpu20_first, torch_cpu20_first))
                   if theirs["step_ms_median"] < ours["step_ms_median"])],
        ["Omniglot 20w1s second-order outer steps per second, NVIDIA H200",
         f"{jax_gpu['meta_steps_per_s']:.1f}",
         f"PyTorch tasks in sequence (the reference code's way; the only PyTorch "
         f"formulation measured on a GPU so far, vmapped PyTorch is queued): "
         f"{torch_gpu['meta_steps_per_s']:.2f}"],
        ["Full-size meta-gradient vs PyTorch float64, worst tensor over all formulations",
         f"{_err(worst['float32'])} (float32), {_err(worst['float64'])} (float64)",
         "tolerance 1e-3 / 1e-6"],
        ["Sinusoid, per-weight learned inner rates (Meta-SGD 1 and 5 steps, per weight and "
         "step with MSL): runs that diverged at the library defaults",
         f"{diverged} of {total}",
         f"**reduced budget** (20,000 outer steps, K = 5 and 10, 3 seeds); per-weight "
         f"rates with the reference code's rate update diverged in {reference_text}"],
    ]
    learning = _rate_learning_accuracy(300)
    rows.append(
        ["Per-weight learned rates at the seed's settings (`inner_lr=0.01, outer_lr=0.001, "
         "inner_steps=5, plus_plus=True`), 5-way 2-shot Gaussian clusters, held-out accuracy",
         f"{learning['parameter:auto']} (per weight and step, default update)",
         f"**reduced budget** (300 outer steps, 3 seeds; chance 20 %): per layer and step "
         f"{learning['layer_step:auto']}; the previous per-weight default "
         f"{learning['parameter:log']}"])
    lines = _table(["measured", "maml_jax", "compare with"], rows)
    lines += ["Generated from the result files by `python -m experiments.results_page`; "
              "every table, with machine, date and command: "
              "[docs/results.md](docs/results.md)."]
    return "\n".join(lines)


def update_readme(text: str) -> str:
    """``text`` (the README) with its headline block regenerated.

    Args:
        text: The README's current text; it must hold both markers.

    Returns:
        The README's text with the lines between the markers replaced.
    """
    start, end = text.find(HEADLINE_BEGIN), text.find(HEADLINE_END)
    if start < 0 or end < start:
        raise ValueError(f"README.md needs the markers {HEADLINE_BEGIN} and {HEADLINE_END}")
    return (text[:start + len(HEADLINE_BEGIN)] + "\n" + render_headline() + "\n"
            + text[end:])


def main(argv: Sequence[str] | None = None) -> int:
    """Writes (or with ``--check`` compares) ``docs/results.md`` and the README headline.

    Args:
        argv: Command-line arguments (default ``sys.argv[1:]``).

    Returns:
        The exit status: 0, or 1 when ``--check`` finds a stale file.
    """
    parser = argparse.ArgumentParser(prog="python -m experiments.results_page",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if a generated file is out of date")
    args = parser.parse_args(argv)
    wanted = {PAGE: render_page(), README: update_readme(README.read_text())}
    stale = [p for p, text in wanted.items() if not p.exists() or p.read_text() != text]
    if args.check:
        for path in stale:
            print(f"{path.relative_to(ROOT)} is out of date: run python -m "
                  "experiments.results_page", file=sys.stderr)
        return 1 if stale else 0
    for path in stale:
        path.write_text(wanted[path])
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
