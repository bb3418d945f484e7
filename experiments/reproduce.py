"""The MAML++ paper's results table, or any subset of it, in one resumable command.

    python -m experiments.reproduce --data-dir ../shared/data \\
        [--cells omniglot_5w1s,omniglot_20w1s] [--methods mamlpp,maml] [--seeds 3] \\
        [--max-minutes M] [--root runs/paper_table] [--set conv_impl=patches ...] [--smoke]

The table is Omniglot 5w1s, 5w5s, 20w1s, 20w5s and mini-ImageNet 5w1s, 5w5s, each with MAML
and MAML++ (``experiments/configs/<cell>_<method>.py``). The order in which the runs are
tried is the table config's (``--table``, default ``experiments/configs/paper_table.py``):
the cells a GPU session should finish first come first. Each run trains its seeds
(0 .. S-1) together as one population (``num_seeds``) in ``<root>/<cell>_<method>/``,
evaluates every seed on the config's 600 fixed test tasks (best checkpoint, and the top-5
ensemble), and the command writes ``<root>/results/paper_table.md`` and ``.json``: per run
mean +- std over seeds, each seed's number, the paper's number, the schedule actually
run, device, versions, wall-clock, date and command.

Resumable and budgeted: ``--max-minutes`` is this call's wall-clock budget. Each run gets
what is left less ``--eval-minutes`` for its evaluation; a run cut short checkpoints,
is evaluated as it stands and is marked partial in the table. Calling again continues
unfinished runs from their latest checkpoint and skips finished ones (a run that hit a
non-finite loss is reported as failed and skipped until its ``failed.json`` is deleted:
training is deterministic). ``--data-dir ROOT`` holds the datasets as folders
``omniglot/`` (the official zips) and ``miniimagenet/``; a mini-ImageNet run whose folder
is missing is reported "not run: no data". ``--smoke`` runs each config's ``:smoke``
variant with the table config's smoke updates (a tiny CPU scale, labelled as such).
Numbers from a schedule other than the paper's are labelled with what differs.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import pathlib
import platform
import shlex
import statistics
import sys
import time
import traceback
from importlib import metadata
from typing import Any

import jax
from absl import flags

from experiments import (
    checkpoints,
    datasets,
    evaluate,
    flag_parsing,
    table_plan,
    table_state,
    train,
)
from experiments.config_lib import ConfigError, schedule_differences, validate_config
from maml_jax import meta, models

__all__ = ["PaperTable", "CELLS", "METHODS", "LAYOUTS", "runs", "run_programs", "run_table",
           "format_table", "main"]

CONFIG_DIR = pathlib.Path(__file__).resolve().parent / "configs"
LAYOUTS = ("auto", "population", "per_seed")
CELLS = ("omniglot_5w1s", "omniglot_5w5s", "omniglot_20w1s", "omniglot_20w5s",
         "miniimagenet_5w1s", "miniimagenet_5w5s")
METHODS = ("mamlpp", "maml")


@dataclasses.dataclass(frozen=True)
class PaperTable:
    """What ``experiments.reproduce`` trains, in which order.

    Attributes:
        order: ``"<cell>_<method>"`` names (``experiments/configs/<name>.py``), the first
            tried first; every cell x method the table has.
        seeds: Seeds per run (trained together as a population).
        smoke: Config updates on top of each config's ``:smoke`` variant for ``--smoke``.
    """

    order: tuple[str, ...]
    seeds: int = 3
    smoke: dict = dataclasses.field(default_factory=dict)


def runs(table: PaperTable, cells=None, methods=None) -> list[str]:
    """The table's run names, in its order, restricted to ``cells`` x ``methods``.

    Example:
        >>> t = PaperTable(order=("omniglot_20w1s_mamlpp", "omniglot_5w1s_mamlpp",
        ...                       "omniglot_5w1s_maml"))
        >>> runs(t, cells=["omniglot_5w1s", "omniglot_20w1s"], methods=["mamlpp"])
        ['omniglot_20w1s_mamlpp', 'omniglot_5w1s_mamlpp']
    """
    for kind, given, known in (("cell", cells, CELLS), ("method", methods, METHODS)):
        unknown = sorted(set(given or ()) - set(known))
        if unknown:
            raise ConfigError(f"unknown {kind}s {unknown}; the table's {kind}s: {list(known)}")
    bad = [n for n in table.order if _split(n) is None]
    if bad or len(set(table.order)) != len(table.order):
        raise ConfigError(f"the table's order must name each <cell>_<method> once (cells "
                          f"{list(CELLS)}, methods {list(METHODS)}); got {list(table.order)}")
    if table.seeds < 1:
        raise ConfigError(f"seeds must be >= 1, got {table.seeds}")
    cells, methods = set(cells or CELLS), set(methods or METHODS)
    return [n for n in table.order if _split(n)[0] in cells and _split(n)[1] in methods]


def _split(name: str) -> tuple[str, str] | None:
    for method in METHODS:
        cell = name.removesuffix(f"_{method}")
        if cell != name and cell in CELLS:
            return cell, method
    return None


def run_config(name: str, *, seeds: int, smoke: bool, smoke_updates: dict,
               overrides: list[str]) -> dict:
    """The checked config of one run: its config file (``:smoke`` variant with
    ``smoke_updates`` if ``smoke``), ``--config.KEY=VALUE`` ``overrides``, the seeds."""
    path = CONFIG_DIR / f"{name}.py"
    cfg = flag_parsing.config_from_flags(
        [f"--config={path}" + (":smoke" if smoke else "")]
        + [f"--config.{o}" for o in overrides])
    cfg = dict(cfg)
    if smoke:
        cfg.update(smoke_updates)
    return validate_config({**cfg, "seed": 0, "num_seeds": seeds})


def _paper_config(name: str) -> dict:
    return validate_config(flag_parsing.config_from_flags([f"--config={CONFIG_DIR / name}.py"]))


def schedule_label(cfg: dict, paper: dict, epochs_done: int | None) -> str:
    """How the run's schedule differs from the paper's (``"paper schedule"`` if not): a
    run is labelled with every difference, never shown as the paper's."""
    diffs = schedule_differences(cfg, paper)
    done = "" if epochs_done is None else f"{epochs_done} of {cfg['num_epochs']} epochs run; "
    return done + ("reduced: " + ", ".join(diffs) if diffs else "paper schedule")


def _data_dir(cfg: dict, data_root: str | None) -> tuple[str | None, bool]:
    """``(the run's data directory, whether its data is there)``."""
    folder = {"omniglot": "omniglot", "miniimagenet": "miniimagenet"}.get(cfg["data"])
    if folder is None or data_root is None:
        # Omniglot without --data-dir: the usual lookup ($MAML_JAX_DATA_DIR, the cache);
        # mini-ImageNet cannot be found without it.
        return None, cfg["data"] != "miniimagenet"
    path = pathlib.Path(data_root) / folder
    return str(path), path.is_dir()


def _data_key(cfg: dict, path: str | None) -> tuple:
    """The config keys ``datasets.load_images`` reads: runs with the same key share one
    load. (Image datasets also check the task shape there, naming a too-small class's
    folder, so for them the shape is part of the key.)"""
    key = (cfg["data"], path, cfg["image_size"], cfg["image_channels"], cfg["image_resize"],
           cfg["split"], cfg["split_seed"], cfg["split_fractions"], cfg["split_counts"],
           cfg["dataset_strict"], cfg["synthetic_num_classes"], cfg["synthetic_counts"],
           cfg["synthetic_seed"])
    if cfg["data"] in ("miniimagenet", "image_folder"):
        key += (cfg["num_ways"], cfg["k_shot"], cfg["q_query"], cfg["q_query_eval"])
    return key


def _environment() -> dict[str, Any]:
    import flax
    import optax
    d = jax.devices()[0]
    return {"device": f"{jax.device_count()} x {d.device_kind} ({d.platform})",
            "versions": {"jax": jax.__version__, "jaxlib": metadata.version("jaxlib"),
                         "flax": flax.__version__, "optax": optax.__version__,
                         "python": platform.python_version()},
            "host": platform.node()}


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _read(path: pathlib.Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _run_one(name: str, cfg: dict, workdir: pathlib.Path, *, images, budget_s: float | None,
             eval_s: float, stop_after: int | None, progress: bool, command: str) -> str:
    """Trains (or continues) and evaluates one run on ``images`` (``load_images``'s
    value, loaded once for every run that shares it); returns what this call did."""
    summary = _read(workdir / checkpoints.SUMMARY_FILE)
    log = _read(workdir / "reproduce_calls.json") or {"calls": []}
    finished = bool(summary and summary.get("finished"))
    if finished and _evaluated_step(log["calls"], workdir) == summary["step"]:
        return "skipped (finished)"
    if (workdir / "failed.json").is_file():
        return "skipped (failed before; delete failed.json to retry)"
    call = {"date": _now(), "command": command, **_environment()}
    t0 = time.perf_counter()
    if not finished:
        minutes = None
        if budget_s is not None:
            minutes = (budget_s - eval_s) / 60
            if minutes <= 0:
                return "not started (budget)"
        try:
            summary = train.train_and_evaluate(cfg, workdir, images=images,
                                               stop_after=stop_after, max_minutes=minutes,
                                               progress=progress)
        except meta.NonFiniteLossError as err:
            workdir.mkdir(parents=True, exist_ok=True)
            checkpoints.write_json(workdir / "failed.json", {
                "error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc(),
                "date": _now()})
            return "failed (non-finite loss)"
        call.update(train_seconds=round(time.perf_counter() - t0, 1),
                    epochs_done=summary["epochs_done"], stopped_by=summary["stopped_by"],
                    resumed_from_step=summary["resumed_from_step"])
    t1 = time.perf_counter()
    evaluate.run_evaluation(workdir, images=images, compare_siblings=False)
    call["eval_seconds"] = round(time.perf_counter() - t1, 1)
    # The training step the evaluation saw: a finished run whose last evaluation is of an
    # earlier step (killed between training and evaluation) is evaluated again.
    call["evaluated_step"] = summary["step"]
    log["calls"].append(call)
    checkpoints.write_json(workdir / "reproduce_calls.json", log)
    return "trained and evaluated" if "train_seconds" in call else "evaluated"


def _evaluated_step(calls: list[dict], workdir: pathlib.Path) -> int | None:
    """The training step of the run's latest evaluation by this script (None if none);
    ``calls``: its ``reproduce_calls.json`` entries."""
    done = [c["evaluated_step"] for c in calls if "evaluated_step" in c]
    return done[-1] if done and (workdir / "test_results.json").is_file() else None


def _program_status(workdir: pathlib.Path) -> tuple[str, dict | None, dict | None, list]:
    """``(status, train summary, test results, calls)`` of one program's directory."""
    summary = _read(workdir / checkpoints.SUMMARY_FILE)
    results = _read(workdir / "test_results.json")
    calls = (_read(workdir / "reproduce_calls.json") or {"calls": []})["calls"]
    if (workdir / "failed.json").is_file():
        status = "failed: " + _read(workdir / "failed.json")["error"].splitlines()[0]
    elif summary is not None and _evaluated_step(calls, workdir) == summary["step"]:
        status = "finished" if summary["finished"] else "partial"
    elif summary is not None:
        status = "trained, not evaluated"
    else:
        status = "not started"
    return status, summary, results, calls


def _row(name: str, workdir: pathlib.Path, cfg: dict, has_data: bool,
         layout: str = "population") -> dict[str, Any]:
    """A table row from what the run's directory holds: one population program, or one
    program per seed (``<run>/seed<k>``) whose numbers are pooled here."""
    cell, method = _split(name)
    paper = _paper_config(name)
    row = {"run": name, "cell": cell, "method": method, "seeds": cfg["num_seeds"],
           "layout": layout,
           "paper_test_accuracy_pct": (list(cfg["paper_test_accuracy"])
                                       if cfg.get("paper_test_accuracy") else None),
           "workdir": str(workdir)}
    dirs = [d for _, _, d in run_programs(name, cfg, layout, workdir.parent)]
    programs = [_program_status(d) for d in dirs]
    statuses = [p[0] for p in programs]
    failed = [st for st in statuses if st.startswith("failed")]
    evaluated = [p for p in programs if p[0] in ("finished", "partial") and p[2] is not None]
    if failed:
        row["status"] = failed[0]
    elif all(st == "finished" for st in statuses):
        row["status"] = "finished"
    elif evaluated:
        row["status"] = "partial"
    elif any(st == "trained, not evaluated" for st in statuses):
        row["status"] = "trained, not evaluated"
    else:
        row["status"] = "not started" if has_data else "not run: no data"
    seeds_finished = sum(st == "finished" for st in statuses)
    if layout == "per_seed" and row["status"] in ("partial", "finished"):
        row["seeds_finished"] = seeds_finished
    summaries = [p[1] for p in programs if p[1] is not None]
    if summaries:
        epochs = min(s["epochs_done"] for s in summaries) if len(summaries) == len(dirs) else 0
        row["schedule"] = schedule_label(cfg, paper, epochs)
        if layout == "per_seed":
            row["schedule"] = (f"{seeds_finished} of {len(dirs)} seeds finished; "
                               + row["schedule"])
        row["epochs_done"], row["num_epochs"] = epochs, cfg["num_epochs"]
    if evaluated:
        for kind in ("best", "ensemble"):
            row[kind] = _pool_seeds([p[2] for p in evaluated], kind)
        row["ensemble"]["size"] = evaluated[0][2]["ensemble"]["size"]
        row["num_test_tasks"] = evaluated[0][2]["num_test_tasks"]
    calls = [c for p in programs for c in p[3]]
    if calls:
        row["train_seconds"] = round(sum(c.get("train_seconds", 0) for c in calls), 1)
        row["eval_seconds"] = round(sum(c.get("eval_seconds", 0) for c in calls), 1)
        last = max(calls, key=lambda c: c["date"])
        row["last_call"] = {k: last[k] for k in ("date", "command", "device", "versions")}
        row["calls"] = len(calls)
    return row


def _pool_seeds(results: list[dict], kind: str) -> dict[str, Any]:
    """Mean and std over seeds of the ``kind`` test accuracy, from one population's
    results or from several single seeds' (std None for one seed)."""
    if len(results) == 1:
        return _over_seeds(results[0], kind)
    per_seed = [r[kind]["test_accuracy_pct"] for r in results]
    return {"mean_pct": statistics.mean(per_seed), "std_pct": statistics.stdev(per_seed),
            "per_seed_pct": per_seed}


def _over_seeds(results: dict, kind: str) -> dict[str, Any]:
    over = results.get("over_seeds")
    if over:   # a population: std over seeds, as the paper reports
        o = over[kind]
        return {"mean_pct": o["mean_pct"], "std_pct": o["std_pct"],
                "per_seed_pct": o["per_seed_pct"]}
    acc = results[kind]["test_accuracy_pct"]
    return {"mean_pct": acc, "std_pct": None, "per_seed_pct": [acc]}


def run_table(table: PaperTable, root: str | pathlib.Path, *, cells=None, methods=None,
              seeds: int | None = None, smoke: bool = False, data_dir: str | None = None,
              max_minutes: float | None = None, eval_minutes: float = 2.0,
              stop_after: int | None = None, overrides: tuple[str, ...] = (),
              state_dir: str | pathlib.Path | None = None, layout: str = "auto",
              progress: bool = False, command: str = "", log=print) -> dict[str, Any]:
    """Trains and evaluates the selected runs in the table's order; writes and returns
    the table (see the module docstring). Every config and data folder is checked before
    anything trains.

    ``layout`` says how a run that has not started trains its seeds: ``"population"``
    (all in one program, ``<root>/<run>/``), ``"per_seed"`` (one program per seed, one
    after another, ``<root>/<run>/seed<k>/``: each window can finish whole seeds) or
    ``"auto"``: whichever has the higher measured seed-steps/s on this device
    (``table_plan.choose_seeds_per_program``; a population where nothing is measured). A
    run that has started keeps its layout. With ``max_minutes`` the call logs its plan:
    what the budget should finish, by the same rates (``table_plan.plan_call``).

    With ``state_dir`` (``experiments.table_state``; the committed one is
    ``table_state.STATE_DIR``) the selected runs are first restored from it, where it is
    further along than ``root``, and each run is saved into it after its call: the next
    GPU window continues from there.

    Usage (MAML++ on Omniglot 5-way 1-shot, 3 seeds, with the Omniglot archives)::

        from experiments.configs import paper_table
        run_table(paper_table.get_config(), "runs/paper_table", cells=["omniglot_5w1s"],
                  methods=["mamlpp"], data_dir="../shared/data")
    """
    if max_minutes is not None and not max_minutes > 0:
        raise ConfigError(f"--max-minutes must be positive, got {max_minutes}")
    if not eval_minutes >= 0:
        raise ConfigError(f"--eval-minutes must be >= 0, got {eval_minutes}")
    if stop_after is not None and stop_after < 1:
        raise ConfigError(f"--stop-after must be >= 1, got {stop_after}")
    start = time.perf_counter()
    root = pathlib.Path(root)
    n = seeds if seeds is not None else table.seeds
    if n < 1:
        raise ConfigError(f"--seeds must be >= 1, got {n}")
    names = runs(table, cells, methods)
    if not names:
        raise ConfigError("no run selected: the table's order holds none of these cells "
                          "x methods")
    if layout not in LAYOUTS:
        raise ConfigError(f"--layout must be one of {LAYOUTS}, got {layout!r}")
    todo = []
    for name in names:
        cfg = run_config(name, seeds=n, smoke=smoke, smoke_updates=table.smoke,
                         overrides=list(overrides))
        todo.append((name, cfg, *_data_dir(cfg, data_dir)))
    # Each dataset is loaded once, here: a wrong folder is an error now, not hours later,
    # and the runs that share it train and are evaluated on the same arrays.
    loaded = {}
    for name, cfg, path, present in todo:
        if not present:
            continue
        try:
            if _data_key(cfg, path) not in loaded:
                loaded[_data_key(cfg, path)] = datasets.load_images(cfg, path)
            images, splits = loaded[_data_key(cfg, path)]
            datasets.check_task_requests(cfg, splits, images)
        except datasets.DataError as err:
            raise datasets.DataError(f"{name}: {err}") from None
    if state_dir is not None:
        for rel, did in table_state.restore_table(state_dir, root, runs=names).items():
            log(f"{rel}: {did} (from {state_dir})")
    layouts = {name: _layout(name, cfg, root, layout, log) for name, cfg, _, _ in todo}
    _log_plan(todo, layouts, root, max_minutes, log)
    for name, cfg, path, present in todo:
        if not present:
            log(f"{name}: not run: no data (no {cfg['data']}/ folder in --data-dir)")
            continue
        for program, program_cfg, workdir in run_programs(name, cfg, layouts[name], root):
            budget_s = None
            if max_minutes is not None:
                budget_s = 60 * max_minutes - (time.perf_counter() - start)
            t0 = time.perf_counter()
            did = _run_one(program, program_cfg, workdir,
                           images=loaded[_data_key(cfg, path)], budget_s=budget_s,
                           eval_s=60 * eval_minutes, stop_after=stop_after,
                           progress=progress, command=command)
            log(f"{program}: {did} ({time.perf_counter() - t0:.0f} s)")
        if state_dir is not None:
            for rel, saved in table_state.save_table(root, state_dir, runs=[name]).items():
                log(f"{rel}: saved to {state_dir} ({saved['bytes'] / 2**20:.2f} MiB"
                    + (f", checkpoint at step {saved['checkpoint_step']})"
                       if saved["checkpoint_step"] is not None else ", results only)"))
    report = {"date": _now(), "command": command, **_environment(), "smoke": smoke,
              "rows": [_row(name, root / name, cfg, present, layouts[name])
                       for name, cfg, _, present in todo]}
    out = root / "results"
    out.mkdir(parents=True, exist_ok=True)
    checkpoints.write_json(out / "paper_table.json", report)
    (out / "paper_table.md").write_text(format_table(report))
    return report


def _device_kind() -> str:
    return jax.devices()[0].device_kind


def _conv_on_device(cfg: dict) -> str:
    return models.resolve_conv_impl(cfg["conv_impl"])


def _layout(name: str, cfg: dict, root: pathlib.Path, requested: str, log) -> str:
    """How the run trains its seeds: as it already does in ``root``, else as requested,
    where "auto" asks ``table_plan`` which is faster on this device, by measured rates."""
    existing = table_plan.existing_layout(root / name)
    if existing is not None or cfg["num_seeds"] == 1:
        return existing or "population"
    if requested != "auto":
        return requested
    chosen, why = table_plan.choose_seeds_per_program(
        table_plan.load_rates(), _device_kind(), _split(name)[0], cfg["num_seeds"],
        _conv_on_device(cfg))
    log(f"layout of {name}: {chosen} ({why})")
    return chosen


def run_programs(name: str, cfg: dict, layout: str, root: pathlib.Path
              ) -> list[tuple[str, dict, pathlib.Path]]:
    """``(name, config, workdir)`` of the run's programs: the population, or one per seed
    (``<run>/seed<k>``, seed ``cfg["seed"] + k``, trained one after another)."""
    if layout == "population":
        return [(name, cfg, root / name)]
    return [(f"{name}/seed{k}", validate_config({**cfg, "seed": cfg["seed"] + k,
                                                 "num_seeds": 1, "seed_shards": 1}),
             root / name / f"seed{k}") for k in range(cfg["num_seeds"])]


def _log_plan(todo, layouts: dict, root: pathlib.Path, max_minutes: float | None, log) -> None:
    """Logs what the call's budget should finish, by the rates measured on this device."""
    if max_minutes is None:
        return
    pending = []
    for name, cfg, _, present in todo:
        if not present:
            continue
        phases = table_plan.program_phases(cfg)
        for program, program_cfg, workdir in run_programs(name, cfg, layouts[name], root):
            summary = _read(workdir / checkpoints.SUMMARY_FILE) or {}
            pending.append(table_plan.Pending(
                program, _split(name)[0], program_cfg["num_seeds"], _conv_on_device(cfg),
                summary.get("step", 0), cfg["num_epochs"] * cfg["iterations_per_epoch"],
                cfg["iterations_per_epoch"], phases))
    plan = table_plan.plan_call(table_plan.load_rates(), _device_kind(), pending,
                                60 * max_minutes)
    log(table_plan.format_plan(plan, 60 * max_minutes))


def _pct(entry: dict | None) -> str:
    if not entry:
        return "-"
    std = "" if entry["std_pct"] is None else f" ± {entry['std_pct']:.2f}"
    return f"{entry['mean_pct']:.2f}{std}"


def _seeds(entry: dict | None) -> str:
    return "-" if not entry else ", ".join(f"{v:.2f}" for v in entry["per_seed_pct"])


def format_table(report: dict[str, Any]) -> str:
    """The markdown of ``paper_table.md``."""
    scale = (" **Smoke scale (tiny CPU configs): not comparable with the paper.**"
             if report["smoke"] else "")
    lines = [f"# MAML++ paper table: reproduction ({report['date']})", "",
             f"`{report['command']}` on {report['device']}, jax "
             f"{report['versions']['jax']}.{scale} Test accuracy in % over the seeds "
             "(mean ± standard deviation over seeds; per seed: each seed's mean over the "
             "test tasks), for the checkpoint with the best validation accuracy and the "
             "top-k ensemble. Paper: Antoniou et al. (2019), Table 1, as the configs quote "
             "it. A run that is not finished, or whose schedule is not the paper's, says "
             "so in its status and schedule columns.", "",
             "| run | status | schedule run | seeds | best checkpoint | per seed | ensemble "
             "| per seed | paper | train + eval wall-clock | last run (date, device) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        paper = r["paper_test_accuracy_pct"]
        paper = f"{paper[0]} ± {paper[1]}" if paper else "-"
        ens = r.get("ensemble")
        wall = "-"
        if "calls" in r:
            wall = (f"{r['train_seconds']:.0f} s + {r['eval_seconds']:.0f} s ({r['calls']} "
                    f"call{'s' if r['calls'] > 1 else ''})")
        last = (f"{r['last_call']['date'][:16]}, {r['last_call']['device']}"
                if "last_call" in r else "-")
        top = f" (top-{ens['size']})" if ens else ""
        lines.append(
            f"| {r['run']} | {r['status']} | {r.get('schedule', '-')} | {r['seeds']} | "
            f"{_pct(r.get('best'))} | {_seeds(r.get('best'))} | "
            f"{_pct(ens)}{top} | {_seeds(ens)} | {paper} | {wall} | {last} |")
    return "\n".join(lines) + "\n"


def define_flags() -> flags.FlagValues:
    """The script's flags on a fresh ``FlagValues`` (see ``experiments.flag_parsing``)."""
    fv = flags.FlagValues()
    flags.DEFINE_string("table", str(CONFIG_DIR / "paper_table.py"), "the table config "
                        "(order of the runs, seeds, smoke updates)", flag_values=fv)
    flags.DEFINE_string("root", "runs/paper_table", "one directory per run, and results/",
                        flag_values=fv)
    flags.DEFINE_list("cells", [], f"cells to run (default all): {','.join(CELLS)}",
                      flag_values=fv)
    flags.DEFINE_list("methods", [], f"methods to run (default all): {','.join(METHODS)}",
                      flag_values=fv)
    flags.DEFINE_integer("seeds", None, "seeds per run (default: the table config's)",
                         flag_values=fv)
    flags.DEFINE_string("data-dir", None, "folder holding omniglot/ and miniimagenet/",
                        flag_values=fv)
    flags.DEFINE_float("max-minutes", None, "wall-clock budget of this call; runs cut "
                       "short are evaluated as they stand and marked partial", flag_values=fv)
    flags.DEFINE_float("eval-minutes", 2.0, "of the budget, kept for each run's evaluation",
                       flag_values=fv)
    flags.DEFINE_integer("stop-after", None, "stop each run once this many epochs are done "
                         "(as if the budget ran out)", flag_values=fv)
    flags.DEFINE_multi_string("set", [], "KEY=VALUE config override for every run "
                              "(repeatable), e.g. conv_impl=patches", flag_values=fv)
    flags.DEFINE_enum("layout", "auto", LAYOUTS, "how a new run trains its seeds: one "
                      "program for all, one per seed, or auto (measured rates)",
                      flag_values=fv)
    flags.DEFINE_string("state-dir", None, "restore the runs from this saved state first "
                        "and save each run into it after its call (between GPU windows: "
                        f"{table_state.STATE_DIR}; experiments.table_state)", flag_values=fv)
    flags.DEFINE_bool("smoke", False, "the configs' tiny :smoke variants", flag_values=fv)
    flags.DEFINE_bool("progress", False, "tqdm progress bars", flag_values=fv)
    return fv


def main(argv: list[str] | None = None) -> int:
    """``python -m experiments.reproduce`` / ``maml-jax-reproduce``; the exit status: 0, 2
    for a flag, config or data error.

    Example (a request that is refused before anything loads or trains):
        >>> main(["--cells=omniglot_5w1s", "--seeds=0"])
        2
    """
    full = flag_parsing.program_argv("python -m experiments.reproduce", argv)
    return flag_parsing.run_main(functools.partial(_main, full))


def _main(full: list[str]) -> int:
    fv = define_flags()
    rest = flag_parsing.parse_or_help(fv, full, __doc__)
    if rest is None:
        return 0
    flag_parsing.check_no_arguments(rest)
    table = flag_parsing.config_from_flags([f"--config={fv['table'].value}"], (PaperTable,))
    command = "python -m experiments.reproduce " + shlex.join(full[1:])
    report = run_table(table, fv["root"].value, cells=fv["cells"].value,
                       methods=fv["methods"].value, seeds=fv["seeds"].value,
                       smoke=fv["smoke"].value, data_dir=fv["data-dir"].value,
                       max_minutes=fv["max-minutes"].value,
                       eval_minutes=fv["eval-minutes"].value,
                       stop_after=fv["stop-after"].value, overrides=tuple(fv["set"].value),
                       state_dir=fv["state-dir"].value, layout=fv["layout"].value,
                       progress=fv["progress"].value,
                       command=command)
    print(format_table(report))
    return 0


if __name__ == "__main__":
    # Run the importable module's main, so the table config (which imports
    # experiments.reproduce) and this script share one PaperTable class.
    from experiments import reproduce as _self  # noqa: PLW0406 - deliberate, see above
    sys.exit(_self.main())
