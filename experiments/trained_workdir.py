"""Opening a trained workdir: its config, data, setup, ranked checkpoints and a template.

``open_trained_workdir`` is what evaluating a run written by ``experiments.train`` starts
with (``experiments.evaluate``, the study's Omniglot runs): it reads the config the run was
trained with, loads and checks its data, builds its ``wiring.Setup`` and opens its
checkpoints read-only, best first, with a state of the right structure to restore them
into. The checkpoint manager is closed when the ``with`` block ends.

Usage::

    with open_trained_workdir("runs/omniglot_5w1s_mamlpp", data_dir=data_dir) as run:
        best_step, best_val_accuracy = run.ranked[0]
        state, info = run.restore(best_step)
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import pathlib
from collections.abc import Iterator, Mapping
from typing import Any

from experiments import checkpoints, datasets, wiring
from experiments.config_lib import ConfigError
from maml_jax import meta

__all__ = ["TrainedWorkdir", "training_finished", "open_trained_workdir"]


@dataclasses.dataclass(frozen=True)
class TrainedWorkdir:
    """An opened training workdir (``open_trained_workdir``)."""

    workdir: pathlib.Path
    cfg: dict                        # the config it was trained with (with the updates)
    images: Any                      # the config's images and class splits
    splits: dict
    setup: wiring.Setup
    mesh: Any                        # wiring.make_mesh(cfg): None on one device
    manager: Any                     # its checkpoint manager, read-only
    ranked: list[tuple[int, float]]  # (step, validation accuracy), best first
    template: meta.MetaState         # the initial (population) state, placed on the mesh

    def restore(self, step: int) -> tuple[meta.MetaState, dict]:
        """The state checkpointed at ``step`` and the checkpoint's info (epoch, ...)."""
        return checkpoints.restore_checkpoint(self.manager, step, self.template)


def training_finished(workdir: str | pathlib.Path) -> bool:
    """Whether ``experiments.train`` finished the run in ``workdir`` (its summary says so).

    Example:
        >>> training_finished("no/such/run")
        False
    """
    summary = pathlib.Path(workdir) / checkpoints.SUMMARY_FILE
    return summary.is_file() and bool(json.loads(summary.read_text()).get("finished"))


@contextlib.contextmanager
def open_trained_workdir(workdir: str | pathlib.Path, *, images: tuple[Any, dict] | None = None,
                         data_dir: str | None = None,
                         config_updates: Mapping[str, Any] | None = None,
                         require_finished: bool = False) -> Iterator[TrainedWorkdir]:
    """Opens a workdir of ``experiments.train`` for evaluation (a context manager).

    Args:
        workdir: The run directory (``config.json``, ``checkpoints/``).
        images: ``(images, splits)`` already loaded (as ``datasets.load_images`` returns
            them), instead of loading the config's data.
        data_dir: Where the config's data is (None: the dataset's default).
        config_updates: Keys replaced in the saved config (e.g. ``num_test_tasks``).
        require_finished: Refuse a run whose training did not finish.

    Raises:
        ConfigError: not a training workdir, unfinished (if required), or no checkpoint
            with a validation accuracy.
        datasets.DataError: the data cannot be loaded.
    """
    workdir = pathlib.Path(workdir)
    cfg = checkpoints.read_workdir_config(workdir)
    if cfg is None:
        raise ConfigError(f"{workdir} holds no {checkpoints.CONFIG_FILE}: not a training workdir")
    if require_finished and not training_finished(workdir):
        raise ConfigError(f"{workdir}: training did not finish (no finished "
                          f"{checkpoints.SUMMARY_FILE})")
    cfg.update(config_updates or {})
    all_images, splits = images if images is not None else datasets.load_images(cfg, data_dir)
    datasets.check_task_requests(cfg, splits, all_images)
    mesh = wiring.make_mesh(cfg)
    setup = wiring.get_setup(cfg)
    manager = checkpoints.checkpoint_manager(workdir, cfg["keep_best"], read_only=True)
    try:
        ranked = checkpoints.ranked_checkpoints(manager)
        if not ranked:
            raise ConfigError(f"no checkpoint with a validation accuracy in {workdir}")
        template = wiring.place_state(wiring.init_population(cfg, setup), cfg, mesh)
        yield TrainedWorkdir(workdir, cfg, all_images, splits, setup, mesh, manager, ranked,
                             template)
    finally:
        manager.close()
