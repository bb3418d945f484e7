"""Sinusoid regression: meta-train MAML and MAML++ and compare them (``make demo``).

    python -m experiments.sinusoid --config=experiments/configs/sinusoid_paper.py:demo \\
        [--config.KEY=VALUE ...] [--workdir=runs/sinusoid_demo] [--iterations=N] [--no-progress]

``--config`` is a config file (``FILE.py[:variant]``) whose ``get_config()`` returns a
comparison (``config_lib.comparison_config``: settings shared by named methods) or a single
sinusoid config (``config_lib.sinusoid_config``). ``--config.KEY=VALUE`` overrides a shared
key (for every method that does not set it itself), ``--config.methods.NAME.KEY=VALUE`` a
key that method NAME sets (``--config.methods['MAML++'].KEY=VALUE`` for a name that is not
a Python name); ``--iterations=N`` trains N iterations (``num_epochs`` =
N / ``iterations_per_epoch``, a whole number).

Every method trains with the experiments' one training loop (``experiments.training_loop``)
and is tested on the config's fixed test tasks. Writes ``results.json`` (with every
method's checked config), ``results.md`` and three plots into the workdir: the query loss
after each inner step, the spread of per-task final losses, and the learned inner learning
rates per layer and step. ``train_sinusoid_workdir`` is a study grid's sinusoid cell.
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
import platform
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import numpy as np
from absl import flags

import maml_jax as mj
from experiments import flag_parsing, training_loop, wiring
from experiments.config_lib import ConfigError, compared_methods, config_to_json
from experiments.study_statistics import mean_ci95

__all__ = ["RUN_FILE", "META_PARAMS_FILE", "SNAPSHOTS_FILE", "SinusoidRun", "train_sinusoid",
           "evaluate_sinusoid", "results_table", "make_plots", "run_comparison",
           "train_sinusoid_workdir", "define_flags", "with_iterations", "main"]

# A study grid's sinusoid cell (``train_sinusoid_workdir``), read by experiments.study_runs.
RUN_FILE = "run.json"
META_PARAMS_FILE = "meta_params.msgpack"
SNAPSHOTS_FILE = "inner_lr_snapshots.msgpack"

# The keys that define a method's test tasks and table columns: a comparison's methods
# share them, so that their rows are comparable.
_TEST_KEYS = ("sinusoid_eval_shots", "sinusoid_eval_steps", "num_test_tasks", "q_query_eval",
              "test_seed")


class SinusoidRun(NamedTuple):
    """A meta-trained sinusoid learner (``train_sinusoid``)."""

    meta_params: Any          # {"params", "inner_lrs"}
    train_log: list[dict]     # {"iteration", "loss"} per host call (mean meta loss)
    seconds: float            # training wall time, compilation included


def _check_sinusoid(cfg: Mapping[str, Any]) -> None:
    if cfg["data"] != "sinusoid":
        raise ConfigError(f"{cfg['name']}: experiments.sinusoid trains data='sinusoid' configs, "
                          f"got data={cfg['data']!r}")


def _progress_bar(enabled: bool, total: int, desc: str):
    if not enabled:
        return None
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="it", dynamic_ncols=True)


def train_sinusoid(cfg: Mapping[str, Any], *, progress: bool = False,
                   on_chunk: Callable[[int, Any], None] | None = None,
                   check_finite: Callable[[dict, int], None] = mj.check_finite) -> SinusoidRun:
    """Meta-trains one sinusoid config (checked, ``data="sinusoid"``) from its seed.

    Args:
        cfg: A checked config (``validate_config``; a comparison's ``compared_methods``).
        progress: Show a tqdm bar.
        on_chunk: Called as ``on_chunk(iterations_done, meta_params)`` before the first
            host call and after every one (a study grid records the learned rates so).
        check_finite: ``training_loop.train_chunks``'s check of each call's metrics.

    Example:
        >>> from experiments.config_lib import sinusoid_config, validate_config
        >>> cfg = validate_config(sinusoid_config(sinusoid_hidden=(8,), meta_batch_size=2,
        ...                                       num_epochs=2, iterations_per_epoch=4,
        ...                                       steps_per_call=2))
        >>> run = train_sinusoid(cfg)
        >>> [r["iteration"] for r in run.train_log], sorted(run.meta_params)
        ([2, 4, 6, 8], ['inner_lrs', 'params'])
    """
    _check_sinusoid(cfg)
    setup = wiring.get_setup(cfg)
    state = wiring.init_state(cfg, setup)
    total = cfg["num_epochs"] * cfg["iterations_per_epoch"]
    bar = _progress_bar(progress, total, f"{cfg['name']:8s}")
    start = time.perf_counter()
    if on_chunk is not None:
        on_chunk(0, state.meta_params)
    log = []
    for chunk in training_loop.train_chunks(state, None, setup, total_steps=total,
                                            check_finite=check_finite):
        state = chunk.state
        log.append({"iteration": chunk.step, "loss": float(np.mean(chunk.metrics["loss"]))})
        if on_chunk is not None:
            on_chunk(chunk.step, state.meta_params)
        if bar is not None:
            bar.update(chunk.num_steps)
            bar.set_postfix(loss=f"{log[-1]['loss']:.3f}")
    if bar is not None:
        bar.close()
    return SinusoidRun(state.meta_params, log, time.perf_counter() - start)


def evaluate_sinusoid(cfg: Mapping[str, Any], meta_params: Any) -> dict[int, np.ndarray]:
    """Per-task query MSE after 0..``num_inner_steps_eval`` steps, per test support size.

    The test tasks are the config's fixed ones (``test_seed``, ``num_test_tasks``,
    ``q_query_eval`` query points), one set per ``sinusoid_eval_shots`` entry; the inner
    loop adapts as in meta-training (the config's inner-gradient clip).

    Example:
        >>> from experiments.config_lib import sinusoid_config, validate_config
        >>> cfg = validate_config(sinusoid_config(
        ...     sinusoid_hidden=(8,), num_test_tasks=3, q_query_eval=4, sinusoid_eval_shots=(5,),
        ...     num_inner_steps_eval=2, sinusoid_eval_steps=(1, 2)))
        >>> setup = wiring.get_setup(cfg)
        >>> losses = evaluate_sinusoid(cfg, wiring.init_state(cfg, setup).meta_params)
        >>> {k: v.shape for k, v in losses.items()}   # (tasks, steps + 1)
        {5: (3, 3)}
    """
    _check_sinusoid(cfg)
    setup = wiring.get_setup(cfg)
    out = {}
    for k in cfg["sinusoid_eval_shots"]:
        tasks = mj.sinusoid_eval_tasks(cfg["test_seed"], cfg["num_test_tasks"], k,
                                       cfg["q_query_eval"])
        n = cfg["num_inner_steps_eval"]
        losses, _ = mj.jit_evaluate_tasks(setup.eval_loss_fn, meta_params["params"],
                                          mj.extend_inner_lrs(meta_params["inner_lrs"], n),
                                          tasks, num_steps=n,
                                          inner_grad_clip=setup.meta_config.inner_grad_clip,
                                          algorithm=setup.meta_config.algorithm)
        out[k] = np.asarray(losses)
    return out


def results_table(steps: tuple[int, ...], evals: Mapping[str, Mapping[int, np.ndarray]]) -> str:
    """A markdown table of the mean ± 95 % CI query MSE after each of ``steps``.

    Example:
        >>> losses = np.array([[1.0, 0.5], [3.0, 0.5]])  # 2 tasks, after 0 and 1 steps
        >>> print(results_table((1,), {"MAML": {5: losses}}))
        | method | K | 1 step |
        |---|---|---|
        | MAML | 5 | 0.500 ± 0.000 |
    """
    head = "| method | K | " + " | ".join(f"{s} step{'' if s == 1 else 's'}"
                                         for s in steps) + " |"
    lines = [head, "|" + "---|" * (2 + len(steps))]
    for name, ev in evals.items():
        for k, losses in ev.items():
            cells = []
            for s in steps:
                mean, ci = mean_ci95(losses[:, s])
                cells.append(f"{mean:.3f} ± {ci:.3f}")
            lines.append(f"| {name} | {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def make_plots(evals: Mapping[str, Mapping[int, np.ndarray]], learned_lrs: Mapping[str, Any],
               workdir: pathlib.Path, *, shots: tuple[int, ...],
               steps: tuple[int, ...]) -> list[str]:
    """Writes the three PNGs (trajectories per support size ``shots``, the spread after the
    last of ``steps``, the learned rates); returns their file names."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    fig, axes = plt.subplots(1, len(shots), figsize=(5 * len(shots), 4))
    axes = np.atleast_1d(axes)
    for ax, k in zip(axes, shots, strict=True):
        for name, ev in evals.items():
            mean, ci = mean_ci95(ev[k], axis=0)
            x = np.arange(len(mean))
            ax.plot(x, mean, marker="o", label=name)
            ax.fill_between(x, mean - ci, mean + ci, alpha=0.2)
        num_tasks = next(iter(evals.values()))[k].shape[0]
        ax.set_yscale("log")
        ax.set(title=f"{k}-shot: query MSE after each inner step", xlabel="inner steps",
               ylabel=f"query MSE ({num_tasks} test tasks, 95% CI)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(workdir / "trajectory.png", dpi=120)
    plt.close(fig)
    files.append("trajectory.png")

    k, s = max(shots), max(steps)
    fig, ax = plt.subplots(figsize=(5, 4))
    names = list(evals)
    ax.boxplot([evals[n][k][:, s] for n in names], showfliers=True)
    ax.set_xticks(range(1, len(names) + 1), names)
    ax.set_yscale("log")
    ax.set(title=f"per-task query MSE, {k}-shot, {s} steps", ylabel="query MSE")
    fig.tight_layout()
    fig.savefig(workdir / "final_loss_spread.png", dpi=120)
    plt.close(fig)
    files.append("final_loss_spread.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, lrs in learned_lrs.items():
        for path, value in jax.tree_util.tree_flatten_with_path(lrs)[0]:
            leaf = np.atleast_1d(np.asarray(value))
            label = "/".join(str(getattr(p, "key", p)) for p in path)
            ax.plot(np.arange(1, len(leaf) + 1), leaf, marker="o", label=f"{name}: {label}")
    ax.set(title="learned inner learning rate per layer and step", xlabel="inner step",
           ylabel="alpha")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(workdir / "learned_inner_lrs.png", dpi=120)
    plt.close(fig)
    files.append("learned_inner_lrs.png")
    return files


def _shared_test_settings(configs: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The test settings every method of a comparison shares (``ConfigError`` if not)."""
    first_name, first = next(iter(configs.items()))
    for name, cfg in configs.items():
        differ = [key for key in _TEST_KEYS if cfg[key] != first[key]]
        if differ:
            raise ConfigError(f"methods {first_name!r} and {name!r} are tested differently "
                              f"({', '.join(differ)}): set these keys for the whole comparison")
    return {key: first[key] for key in _TEST_KEYS}


def _config_record(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A checked config as JSON values (as a workdir's config.json records it)."""
    return json.loads(config_to_json(cfg))


def run_comparison(configs: Mapping[str, Mapping[str, Any]], workdir: str | pathlib.Path, *,
                   progress: bool = False, command: str = "", paper_note: str = "") -> dict:
    """Trains and tests every method, writes results.md / results.json / plots; returns
    the results (see the module docstring).

    Args:
        configs: ``{method name: checked sinusoid config}`` (``compared_methods``).
        workdir: The output directory (created).
        progress: tqdm bars.
        command: The command line, recorded in the results.
        paper_note: What the paper reports, quoted under the table.
    """
    for cfg in configs.values():
        _check_sinusoid(cfg)
    test = _shared_test_settings(configs)
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    first = next(iter(configs.values()))
    print(f"sinusoid: {', '.join(configs)}; meta-batch {first['meta_batch_size']}, "
          f"K={first['k_shot']}; device {jax.devices()[0].device_kind}")
    evals, learned, timings, logs = {}, {}, {}, {}
    for name, cfg in configs.items():
        run = train_sinusoid(cfg, progress=progress)
        evals[name] = evaluate_sinusoid(cfg, run.meta_params)
        timings[name], logs[name] = run.seconds, run.train_log
        if cfg["learn_inner_lrs"]:
            learned[name] = jax.device_get(run.meta_params["inner_lrs"])

    steps = test["sinusoid_eval_steps"]
    table = results_table(steps, evals)
    plots = make_plots(evals, learned, workdir, shots=test["sinusoid_eval_shots"], steps=steps)
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
               f"jax {jax.__version__} on {jax.devices()[0].device_kind}")
    md = [f"# Sinusoid results ({stamp})", "", f"Command: `{command}`", f"Machine: {machine}",
          "", "Query MSE on the fixed test tasks (mean ± 95% CI):", "", table, "",
          "Training time: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()),
          "", paper_note]
    (workdir / "results.md").write_text("\n".join(md) + "\n")
    result = {
        "date": stamp, "command": command, "machine": machine,
        "configs": {name: _config_record(cfg) for name, cfg in configs.items()},
        "train_seconds": timings, "train_log": logs,
        "test_mse": {name: {str(k): {str(s): list(mean_ci95(v[:, s])) for s in steps}
                            for k, v in ev.items()}
                     for name, ev in evals.items()},
        "plots": plots,
    }
    (workdir / "results.json").write_text(json.dumps(result, indent=1, default=float))
    print("\n" + table)
    print(f"\nwrote {workdir}/results.md, results.json and " + ", ".join(plots))
    return result


def train_sinusoid_workdir(cfg: Mapping[str, Any], workdir: str | pathlib.Path, *,
                           snapshots: int = 8, progress: bool = False) -> dict[str, Any]:
    """A study grid's sinusoid cell: trains ``cfg`` into ``workdir``; returns run.json.

    Writes the meta-parameters (``META_PARAMS_FILE``), ``snapshots`` + 1 snapshots of the
    learned rates through training (``SNAPSHOTS_FILE``, keyed by iteration) and
    ``RUN_FILE``: what the study reads (method = the config's name, K, seed, trained steps,
    ...), the checked config, the training log and ``finished``. No checkpoints: a cell
    is minutes long and restarts if interrupted.
    """
    from flax import serialization
    total = cfg["num_epochs"] * cfg["iterations_per_epoch"]
    every = max(cfg["steps_per_call"], total // max(1, snapshots))
    snaps = {}

    def record(done, meta_params):
        if done % every == 0 or done == total:
            snaps[str(done)] = jax.device_get(meta_params["inner_lrs"])

    run = train_sinusoid(cfg, progress=progress, on_chunk=record)
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / META_PARAMS_FILE).write_bytes(
        serialization.msgpack_serialize(jax.device_get(run.meta_params)))
    (workdir / SNAPSHOTS_FILE).write_bytes(serialization.msgpack_serialize(snaps))
    info = {"kind": "sinusoid", "method": cfg["name"], "k_shot": cfg["k_shot"],
            "seed": cfg["seed"], "trained_steps": cfg["num_inner_steps"],
            "hidden": list(cfg["sinusoid_hidden"]), "msl": cfg["msl"],
            "msl_epochs": cfg["msl_epochs"], "inner_grad_clip": cfg["inner_grad_clip"],
            "num_epochs": cfg["num_epochs"], "iterations": total,
            "train_seconds": run.seconds, "config": _config_record(cfg),
            "train_log": run.train_log, "finished": True,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    (workdir / RUN_FILE).write_text(json.dumps(info, indent=1))
    return info


def define_flags(argv: list[str]) -> flags.FlagValues:
    """The script's flags on a fresh ``FlagValues`` (see ``experiments.flag_parsing``);
    ``argv`` is the full command line (``--config.KEY=VALUE`` overrides are read from it)."""
    fv = flags.FlagValues()
    flag_parsing.define_config_flag(
        fv, argv, required=False, default="experiments/configs/sinusoid_demo.py",
        help_string="sinusoid config file, FILE.py[:variant] (a comparison or one config); "
                    "override its keys with --config.KEY=VALUE, a method's with "
                    "--config.methods.NAME.KEY=VALUE")
    flags.DEFINE_string("workdir", None, "output directory (default runs/<config file name>)",
                        flag_values=fv)
    flags.DEFINE_integer("iterations", None, "train this many iterations (a whole number of "
                         "epochs: sets num_epochs)", flag_values=fv)
    flags.DEFINE_bool("no-progress", False, "no tqdm progress bar", flag_values=fv)
    return fv


def with_iterations(config, iterations: int | None):
    """``config`` (a comparison or one config) trained for ``iterations`` in all: its
    ``num_epochs`` set to ``iterations / iterations_per_epoch`` (None: unchanged).

    Example:
        >>> from experiments.config_lib import sinusoid_config
        >>> with_iterations(sinusoid_config(iterations_per_epoch=500), 2000).num_epochs
        4
    """
    if iterations is None:
        return config
    ipe = config.iterations_per_epoch
    if iterations < 1:
        raise ConfigError("--iterations must be >= 1")
    if iterations % ipe:
        raise ConfigError(f"--iterations={iterations} is not a whole number of epochs of "
                          f"{ipe} iterations (iterations_per_epoch)")
    config.num_epochs = iterations // ipe
    return config


def main(argv: list[str] | None = None) -> int:
    """``python -m experiments.sinusoid``; returns the exit status (``flag_parsing.run_main``:
    2 for a bad flag or config, 3 if training diverges).

    Example (``--iterations`` must be whole epochs; nothing is trained):
        >>> main(["--config=experiments/configs/sinusoid_paper.py:smoke", "--iterations=7"])
        2
    """
    full = flag_parsing.program_argv("python -m experiments.sinusoid", argv)
    return flag_parsing.run_main(functools.partial(_main, full))


def _main(full: list[str]) -> int:
    fv = define_flags(full)
    rest = flag_parsing.parse_or_help(fv, full, __doc__, config_flag="config")
    if rest is None:
        return 0
    flag_parsing.check_no_arguments(rest)
    config = with_iterations(fv["config"].value, fv["iterations"].value)
    configs = compared_methods(config)
    config_path = fv["config"].config_filename.split(":", 1)[0]
    workdir = fv["workdir"].value or f"runs/{pathlib.Path(config_path).stem}"
    run_comparison(configs, workdir, progress=not fv["no-progress"].value,
                   command="python -m experiments.sinusoid " + " ".join(full[1:]),
                   paper_note=config.get("paper_note", ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
