"""Trains a whole study grid from one config, then runs the study on it (one command).

    python -m experiments.study_grid --grid=experiments/configs/study_sinusoid.py \\
        --root=runs/study_sinusoid [--smoke] [--only=PATTERN ...] [--no-study]

A grid config's ``get_config()`` returns a ``SinusoidGrid`` (methods x support sizes x
seeds) or an ``OmniglotGrid`` (named ``experiments.train`` configs x seeds). Every cell
trains into its own directory under ``--root``; a finished cell is skipped, so the command
is resumable: run it again after an interruption. (Omniglot cells also resume inside a
run from their last checkpoint; a sinusoid cell, minutes long, restarts.) A cell whose
training fails (non-finite loss) gets a ``failed.json`` with the message, and the grid goes
on; it is not retried on the next call (training is deterministic) unless
``--retry-failed``. Finally ``experiments.study`` evaluates all cells into ``--root/study``.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import pathlib
import sys
import time
import traceback
from typing import Any

import jax
from absl import flags

import maml_jax as mj
from experiments import flag_parsing, sinusoid, study
from experiments.config_lib import ConfigError, validate_config

__all__ = ["SinusoidGrid", "OmniglotGrid", "cells", "train_cell", "main"]


@dataclasses.dataclass(frozen=True)
class SinusoidGrid:
    """Sinusoid methods x support sizes K (training and test) x seeds."""

    base: sinusoid.SinusoidConfig          # shared settings; its ``methods`` are ignored
    methods: tuple[sinusoid.MethodConfig, ...]
    shots: tuple[int, ...] = (5, 10)
    seeds: tuple[int, ...] = (0, 1, 2)
    snapshots: int = 8                     # learned-rate snapshots through training
    smoke: dict = dataclasses.field(default_factory=dict)  # replace() of base for --smoke


@dataclasses.dataclass(frozen=True)
class OmniglotGrid:
    """Named ``experiments.train`` configs (dicts) x seeds."""

    configs: dict                          # name -> config dict
    seeds: tuple[int, ...] = (0, 1)
    seeds_for: dict = dataclasses.field(default_factory=dict)  # name -> seeds (overrides)
    smoke: dict = dataclasses.field(default_factory=dict)  # config updates for --smoke


def cells(grid: SinusoidGrid | OmniglotGrid, smoke: bool = False) -> list[tuple[str, Any]]:
    """``(directory name, what to train)`` for every cell of the grid, in training order."""
    out = []
    if isinstance(grid, SinusoidGrid):
        base = dataclasses.replace(grid.base, **grid.smoke) if smoke else grid.base
        for k in grid.shots:
            for method in grid.methods:
                m = method
                if smoke:
                    m = dataclasses.replace(method, msl_epochs=min(method.msl_epochs, 1))
                for seed in grid.seeds:
                    cfg = dataclasses.replace(base, methods=(m,), k_train=k, seed=seed,
                                              eval_shots=(k,))
                    out.append((f"{m.name}_K{k}_s{seed}", cfg))
    elif isinstance(grid, OmniglotGrid):
        unknown = sorted(set(grid.seeds_for) - set(grid.configs))
        if unknown:
            raise ConfigError(f"seeds_for names unknown configs {unknown}; configs: "
                              f"{sorted(grid.configs)}")
        for name, cfg in grid.configs.items():
            for seed in grid.seeds_for.get(name, grid.seeds):
                c = {**cfg, **(grid.smoke if smoke else {}), "seed": seed, "name": name}
                out.append((f"{name}_s{seed}", validate_config(c)))
    else:
        raise ConfigError(f"get_config() must return a SinusoidGrid or OmniglotGrid, got "
                          f"{type(grid).__name__}")
    return out


def _finished(workdir: pathlib.Path) -> bool:
    for name in ("run.json", "train_summary.json"):
        f = workdir / name
        if f.is_file() and json.loads(f.read_text()).get("finished"):
            return True
    return False


def _train_sinusoid(cfg: sinusoid.SinusoidConfig, workdir: pathlib.Path, snapshots: int,
                    progress: bool) -> None:
    from flax import serialization
    m, = cfg.methods
    every = max(cfg.steps_per_call, cfg.iterations // max(1, snapshots))
    snaps = {}

    def record(done, meta_params):
        if done % every == 0 or done == cfg.iterations:
            snaps[str(done)] = jax.device_get(meta_params["inner_lrs"])

    meta_params, log, seconds = sinusoid.train_method(cfg, m, progress=progress, on_chunk=record)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "meta_params.msgpack").write_bytes(
        serialization.msgpack_serialize(jax.device_get(meta_params)))
    (workdir / "inner_lr_snapshots.msgpack").write_bytes(serialization.msgpack_serialize(snaps))
    info = {"kind": "sinusoid", "method": m.name, "k_shot": cfg.k_train, "seed": cfg.seed,
            "trained_steps": m.num_inner_steps, "hidden": list(cfg.hidden), "msl": m.msl,
            "msl_epochs": m.msl_epochs, "inner_grad_clip": m.inner_grad_clip,
            "num_epochs": max(1, cfg.iterations // cfg.iterations_per_epoch),
            "iterations": cfg.iterations, "train_seconds": seconds,
            "config": dataclasses.asdict(cfg), "train_log": log, "finished": True,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    (workdir / "run.json").write_text(json.dumps(info, indent=1))


def train_cell(cfg: Any, workdir: pathlib.Path, *, snapshots: int = 8, progress: bool = False,
               data_dir: str | None = None, retry_failed: bool = False) -> str:
    """Trains one cell unless finished (or failed before: training is deterministic, so a
    failed cell is retried only with ``retry_failed``); returns "skipped", "skipped
    (failed before)", "trained" or "failed"."""
    if _finished(workdir):
        return "skipped"
    if (workdir / "failed.json").is_file() and not retry_failed:
        return "skipped (failed before)"
    try:
        if isinstance(cfg, sinusoid.SinusoidConfig):
            _train_sinusoid(cfg, workdir, snapshots, progress)
        else:
            from experiments import train
            train.train_and_evaluate(cfg, workdir, data_dir=data_dir, progress=progress)
    except mj.NonFiniteLossError as err:
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "failed.json").write_text(json.dumps(
            {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}))
        return "failed"
    (workdir / "failed.json").unlink(missing_ok=True)
    return "trained"


def define_flags() -> flags.FlagValues:
    """The script's flags on a fresh ``FlagValues`` (see ``experiments.flag_parsing``).

    ``--only`` is repeated for several patterns (``--only='*_K5_*' --only='MAML_*'``).
    """
    fv = flags.FlagValues()
    flags.DEFINE_string("grid", None, "experiments/configs/study_*.py", flag_values=fv)
    flags.DEFINE_string("root", None, "one directory per cell, and study/", flag_values=fv)
    flags.DEFINE_bool("smoke", False, "the grid's tiny CPU variant", flag_values=fv)
    flags.DEFINE_multi_string("only", [], "train only cells whose name matches this shell "
                              "pattern (repeatable, e.g. '*_K5_*'); the study still covers "
                              "every finished cell", flag_values=fv)
    flags.DEFINE_bool("no-study", False, "train only", flag_values=fv)
    flags.DEFINE_bool("retry-failed", False, "train cells again that failed before (e.g. "
                      "after changing the code)", flag_values=fv)
    flags.DEFINE_string("data-dir", None, "Omniglot archives (Omniglot grids)", flag_values=fv)
    flags.DEFINE_bool("progress", False, "tqdm progress bars", flag_values=fv)
    for name in ("grid", "root"):
        flags.mark_flag_as_required(name, flag_values=fv)
    return fv


def main(argv: list[str] | None = None) -> int:
    """``python -m experiments.study_grid``; returns the exit status (2: bad flags or grid).

    Example:
        >>> main(["--grid=experiments/configs/study_sinusoid.py", "--root=/tmp/g",
        ...       "--smoke", "--only=MAML_K5_*"])  # doctest: +SKIP
        0
    """
    full = flag_parsing.program_argv("python -m experiments.study_grid", argv)
    fv = define_flags()
    try:
        rest = flag_parsing.parse_or_help(fv, full, __doc__)
        if rest is None:
            return 0
        flag_parsing.check_no_arguments(rest, " (several --only patterns: repeat the flag)")
        grid = flag_parsing.config_from_flags([f"--config={fv['grid'].value}"],
                                              (SinusoidGrid, OmniglotGrid))
        todo = cells(grid, fv["smoke"].value)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    only = fv["only"].value
    root = pathlib.Path(fv["root"].value)
    snapshots = getattr(grid, "snapshots", 0)
    for name, cfg in todo:
        if only and not any(fnmatch.fnmatchcase(name, o) for o in only):
            continue
        start = time.perf_counter()
        status = train_cell(cfg, root / name, snapshots=snapshots,
                            progress=fv["progress"].value, data_dir=fv["data-dir"].value,
                            retry_failed=fv["retry-failed"].value)
        print(f"{name}: {status} ({time.perf_counter() - start:.0f} s)", flush=True)
    if fv["no-study"].value:
        return 0
    command = "python -m experiments.study_grid " + " ".join(
        argv if argv is not None else sys.argv[1:])
    res = study.run_study([root / name for name, _ in todo], root / "study",
                          data_dir=fv["data-dir"].value,
                          command=command)
    print((root / "study" / "study.md").read_text())
    return 0 if res["groups"] else 1


if __name__ == "__main__":
    # Run the importable module's main, so grid configs (which import
    # experiments.study_grid) and this script share one SinusoidGrid class.
    from experiments import study_grid as _self  # noqa: PLW0406 - deliberate, see above
    sys.exit(_self.main())
