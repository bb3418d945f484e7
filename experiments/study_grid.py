"""Trains a whole study grid from one config, then runs the study on it (one command).

    python -m experiments.study_grid --grid=experiments/configs/study_sinusoid.py \\
        --root=runs/study_sinusoid [--smoke] [--only=PATTERN ...] [--no-study]

A grid config's ``get_config()`` returns a ``StudyGrid``: named configs (sinusoid configs,
trained by ``experiments.sinusoid``, or image configs, trained by ``experiments.train``) x
seeds. Every cell trains into its own directory under ``--root``; a finished cell is
skipped, so the command is resumable: run it again after an interruption. (Image cells
also resume inside a run from their last checkpoint; a sinusoid cell, minutes long,
restarts.) A cell whose training fails (non-finite loss) gets a ``failed.json`` with the
message, and the grid goes on; it is not retried on the next call (training is
deterministic) unless ``--retry-failed``. Finally ``experiments.study`` evaluates all cells
into ``--root/study``.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import json
import pathlib
import sys
import time
import traceback
from collections.abc import Mapping
from typing import Any

from absl import flags

import maml_jax as mj
from experiments import checkpoints, flag_parsing, sinusoid, study
from experiments.config_lib import ConfigError, validate_config
from experiments.study_runs import FAILED_FILE

__all__ = ["StudyGrid", "cells", "train_cell", "define_flags", "main"]


@dataclasses.dataclass(frozen=True)
class StudyGrid:
    """Named configs x seeds: one cell per config and seed.

    A cell trains into ``<root>/<key>_s<seed>`` (``key``: the config's key in ``configs``);
    the config's own ``name`` is the method the study groups the cell under, within its
    setting (K for a sinusoid, ways and shots for images), so that e.g. ``MAML_K5`` and
    ``MAML_K10`` are the method ``MAML`` in two settings.

    Example:
        >>> from experiments.config_lib import sinusoid_config
        >>> grid = StudyGrid(configs={f"MAML_K{k}": sinusoid_config(name="MAML", k_shot=k)
        ...                           for k in (5, 10)}, seeds=(0, 1))
        >>> [(name, cfg["name"], cfg["k_shot"], cfg["seed"]) for name, cfg in cells(grid)][:3]
        [('MAML_K5_s0', 'MAML', 5, 0), ('MAML_K5_s1', 'MAML', 5, 1), ('MAML_K10_s0', 'MAML', 10, 0)]
    """

    configs: Mapping[str, Any]             # key -> config (ConfigDict or dict)
    seeds: tuple[int, ...] = (0, 1)
    seeds_for: Mapping[str, tuple[int, ...]] = dataclasses.field(default_factory=dict)
    snapshots: int = 8                     # sinusoid cells: learned-rate snapshots
    smoke: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # updates for --smoke


def cells(grid: StudyGrid, smoke: bool = False) -> list[tuple[str, dict[str, Any]]]:
    """``(directory name, checked config)`` for every cell of the grid, in training order:
    the configs in their order, each with its seeds (``seeds_for``, else ``seeds``)."""
    if not isinstance(grid, StudyGrid):
        raise ConfigError(f"get_config() must return a StudyGrid, got {type(grid).__name__}")
    unknown = sorted(set(grid.seeds_for) - set(grid.configs))
    if unknown:
        raise ConfigError(f"seeds_for names unknown configs {unknown}; configs: "
                          f"{sorted(grid.configs)}")
    out = []
    for key, cfg in grid.configs.items():
        for seed in grid.seeds_for.get(key, grid.seeds):
            name = f"{key}_s{seed}"
            try:
                out.append((name, validate_config({**cfg, **(grid.smoke if smoke else {}),
                                                   "seed": seed})))
            except ConfigError as err:
                raise ConfigError(f"cell {name}: {err}") from None
    return out


def _finished(workdir: pathlib.Path) -> bool:
    for name in (sinusoid.RUN_FILE, checkpoints.SUMMARY_FILE):
        f = workdir / name
        if f.is_file() and json.loads(f.read_text()).get("finished"):
            return True
    return False


def train_cell(cfg: dict[str, Any], workdir: pathlib.Path, *, snapshots: int = 8,
               progress: bool = False, data_dir: str | None = None,
               retry_failed: bool = False) -> str:
    """Trains one cell unless finished (or failed before: training is deterministic, so a
    failed cell is retried only with ``retry_failed``); returns "skipped", "skipped
    (failed before)", "trained" or "failed"."""
    if _finished(workdir):
        return "skipped"
    if (workdir / FAILED_FILE).is_file() and not retry_failed:
        return "skipped (failed before)"
    try:
        if cfg["data"] == "sinusoid":
            sinusoid.train_sinusoid_workdir(cfg, workdir, snapshots=snapshots,
                                            progress=progress)
        else:
            from experiments import train
            train.train_and_evaluate(cfg, workdir, data_dir=data_dir, progress=progress)
    except mj.NonFiniteLossError as err:
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / FAILED_FILE).write_text(json.dumps(
            {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}))
        return "failed"
    (workdir / FAILED_FILE).unlink(missing_ok=True)
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
    """``python -m experiments.study_grid``; returns the exit status (0, 1 if the study
    evaluated no run, 2: bad flags or grid, ``flag_parsing.run_main``).

    Example (a grid config that does not exist):
        >>> main(["--grid=experiments/configs/no_such_grid.py", "--root=runs/grid"])
        2
    """
    full = flag_parsing.program_argv("python -m experiments.study_grid", argv)
    return flag_parsing.run_main(functools.partial(_main, full))


def _main(full: list[str]) -> int:
    fv = define_flags()
    rest = flag_parsing.parse_or_help(fv, full, __doc__)
    if rest is None:
        return 0
    flag_parsing.check_no_arguments(rest, " (several --only patterns: repeat the flag)")
    grid = flag_parsing.config_from_flags([f"--config={fv['grid'].value}"], (StudyGrid,))
    todo = cells(grid, fv["smoke"].value)
    only = fv["only"].value
    root = pathlib.Path(fv["root"].value)
    for name, cfg in todo:
        if only and not any(fnmatch.fnmatchcase(name, o) for o in only):
            continue
        start = time.perf_counter()
        status = train_cell(cfg, root / name, snapshots=grid.snapshots,
                            progress=fv["progress"].value, data_dir=fv["data-dir"].value,
                            retry_failed=fv["retry-failed"].value)
        print(f"{name}: {status} ({time.perf_counter() - start:.0f} s)", flush=True)
    if fv["no-study"].value:
        return 0
    res = study.run_study([root / name for name, _ in todo], root / "study",
                          data_dir=fv["data-dir"].value,
                          command="python -m experiments.study_grid " + " ".join(full[1:]))
    print((root / "study" / "study.md").read_text())
    return 0 if res["groups"] else 1


if __name__ == "__main__":
    # Run the importable module's main, so grid configs (which import
    # experiments.study_grid) and this script share one StudyGrid class.
    from experiments import study_grid as _self  # noqa: PLW0406 - deliberate, see above
    sys.exit(_self.main())
