"""The study's runs: each trained run evaluated to 2N inner steps on its setting's test tasks.

``evaluate_run(workdir)`` reads a sinusoid cell (``experiments.sinusoid``'s ``run.json``, as
a study grid writes it) or a training workdir of ``experiments.train``, and returns a
``RunEval``: per-task query losses (and accuracies, for classification) after 0..2N steps
(N = the steps it was trained with), the learned rates through training, and what the study
groups runs by (method, setting, seed). A run that failed or cannot be evaluated raises
``RunFailed`` (or a ``ConfigError``) with the reason.

Sinusoid runs are tested on the study's own fixed tasks (``SINUSOID_TEST_SEED``, whatever
the run's seed); Omniglot runs on their config's test tasks, from their best checkpoint, and
the evaluation is cached in the workdir (``STUDY_CACHE``).

Example:
    >>> try:
    ...     evaluate_run("runs/no_such_run")
    ... except RunFailed as err:
    ...     print(err)
    runs/no_such_run is neither a sinusoid run (run.json) nor a training workdir (config.json)
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

import jax
import numpy as np

import maml_jax as mj
from experiments import checkpoints, datasets, sinusoid, wiring
from experiments.trained_workdir import open_trained_workdir

__all__ = ["SINUSOID_TEST_SEED", "SINUSOID_TEST_TASKS", "SINUSOID_QUERY_POINTS", "STUDY_CACHE",
           "FAILED_FILE", "RunEval", "RunFailed", "evaluate_run"]

SINUSOID_TEST_SEED = 2026          # the study's own fixed test tasks, whatever the run's seed
SINUSOID_TEST_TASKS = 600
SINUSOID_QUERY_POINTS = 100
STUDY_CACHE = "study_eval.npz"     # per Omniglot workdir: its test-task evaluation
FAILED_FILE = "failed.json"        # a study grid's cell whose training failed: its error


@dataclasses.dataclass
class RunEval:
    """One evaluated run."""

    workdir: str
    kind: str                   # "sinusoid" | "omniglot"
    method: str
    setting: str                # "K=5", "5w1s", ...
    seed: int
    trained_steps: int
    losses: np.ndarray          # (tasks, 2N + 1)
    accuracy: np.ndarray | None
    inner_lr_snapshots: dict[int, Any]   # training iteration -> inner_lrs pytree
    msl: bool
    msl_epochs: int
    num_epochs: int
    train_seconds: float | None = None   # meta-training's wall clock, where recorded


class RunFailed(RuntimeError):
    """A run that failed in training or cannot be evaluated."""


def _sinusoid_run(workdir: pathlib.Path, info: dict) -> RunEval:
    """A sinusoid cell, from its run.json fields (old cells' files have the same fields)."""
    from flax import serialization
    meta_params = serialization.msgpack_restore(
        (workdir / sinusoid.META_PARAMS_FILE).read_bytes())
    snaps_raw = serialization.msgpack_restore((workdir / sinusoid.SNAPSHOTS_FILE).read_bytes())
    n, k = int(info["trained_steps"]), int(info["k_shot"])
    loss_fn = mj.make_loss_fn(mj.MLP(hidden=tuple(info["hidden"])), "mse")
    tasks = mj.sinusoid_eval_tasks(SINUSOID_TEST_SEED, SINUSOID_TEST_TASKS, k,
                                   SINUSOID_QUERY_POINTS)
    # Runs recorded before the inner-gradient clip existed were trained without one.
    # Twice the trained steps: the last step's rates repeat (extend_inner_lrs).
    losses, _ = mj.jit_evaluate_tasks(loss_fn, meta_params["params"],
                                      mj.extend_inner_lrs(meta_params["inner_lrs"], 2 * n),
                                      tasks, num_steps=2 * n,
                                      inner_grad_clip=info.get("inner_grad_clip"))
    return RunEval(str(workdir), "sinusoid", info["method"], f"K={k}", int(info["seed"]), n,
                   np.asarray(losses), None, {int(i): v for i, v in snaps_raw.items()},
                   bool(info["msl"]), int(info["msl_epochs"]), int(info["num_epochs"]),
                   info.get("train_seconds"))


def _omniglot_run(workdir: pathlib.Path, images=None, data_dir=None) -> RunEval:
    """A finished training workdir: its best checkpoint on its test tasks (cached)."""
    with open_trained_workdir(workdir, images=images, data_dir=data_dir,
                              require_finished=True) as run:
        cfg = run.cfg
        best_step = run.ranked[0][0]
        best, _ = run.restore(best_step)
        # The rates at every retained checkpoint (best-k and the latest) + the initial ones.
        snaps = {0: jax.device_get(run.template.meta_params["inner_lrs"])}
        for step in sorted(run.manager.all_steps()):
            state = best if step == best_step else run.restore(step)[0]
            snaps[int(step)] = jax.device_get(state.meta_params["inner_lrs"])
        n = int(cfg["num_inner_steps"])
        # The evaluation is cached in the workdir, keyed by what determines it, so that a
        # study over a growing grid evaluates each finished run once.
        key = {"step": int(best_step), "num_test_tasks": cfg["num_test_tasks"],
               "test_seed": cfg["test_seed"], "num_steps": 2 * n}
        cache = workdir / STUDY_CACHE
        cached = np.load(cache) if cache.is_file() else None
        if cached is not None and json.loads(str(cached["key"])) == key:
            losses, accuracy = cached["losses"], cached["accuracy"]
        else:
            tasks = datasets.fixed_eval_tasks(
                jax.device_put(datasets.select_classes(run.images, run.splits["test"])), cfg,
                "test")
            mp = best.meta_params
            losses, aux = mj.jit_evaluate_tasks(
                run.setup.eval_loss_fn, mp["params"], mj.extend_inner_lrs(mp["inner_lrs"], 2 * n),
                tasks, num_steps=2 * n,
                batch_size=wiring.eval_batch_size(cfg),
                inner_grad_clip=run.setup.meta_config.inner_grad_clip,
                algorithm=run.setup.meta_config.algorithm)
            losses, accuracy = np.asarray(losses), np.asarray(aux["accuracy"])
            np.savez(cache, losses=losses, accuracy=accuracy, key=json.dumps(key))
    return RunEval(str(workdir), "omniglot", cfg["name"], f"{cfg['num_ways']}w{cfg['k_shot']}s",
                   int(cfg["seed"]), n, losses, accuracy, snaps,
                   bool(cfg["msl"]), int(cfg["msl_epochs"]), int(cfg["num_epochs"]),
                   _train_seconds(pathlib.Path(workdir)))


def _train_seconds(workdir: pathlib.Path) -> float | None:
    """The training wall clock of a run trained in one go (None after a resume: its summary
    times the last part only)."""
    path = workdir / "train_summary.json"
    if not path.is_file():
        return None
    summary = json.loads(path.read_text())
    if summary.get("resumed_from_step") is not None:
        return None
    return summary.get("wall_seconds_this_run")


def evaluate_run(workdir: str | pathlib.Path, *, images=None, data_dir=None) -> RunEval:
    """Evaluates one run directory; raises ``RunFailed`` (or ``ConfigError``) with the
    reason if it cannot.

    Args:
        workdir: A sinusoid cell or a finished training workdir.
        images: Omniglot runs: ``(images, splits)`` already loaded (else loaded from the
            run's config and ``data_dir``).
        data_dir: Omniglot runs: where their data is.
    """
    workdir = pathlib.Path(workdir)
    failed = workdir / FAILED_FILE
    if failed.is_file():
        raise RunFailed(json.loads(failed.read_text()).get("error", "failed"))
    if (workdir / sinusoid.RUN_FILE).is_file():
        info = json.loads((workdir / sinusoid.RUN_FILE).read_text())
        if not info.get("finished"):
            raise RunFailed(f"{workdir}: training did not finish")
        return _sinusoid_run(workdir, info)
    cfg = checkpoints.read_workdir_config(workdir)
    if cfg is None:
        raise RunFailed(f"{workdir} is neither a sinusoid run ({sinusoid.RUN_FILE}) nor a "
                        f"training workdir ({checkpoints.CONFIG_FILE})")
    if cfg["num_seeds"] > 1:
        # One RunEval per workdir and seed is what the study groups; a population holds
        # several seeds in one workdir. Train the grid's seeds as separate cells instead.
        raise RunFailed(f"{workdir} is a population run ({cfg['num_seeds']} seeds); the study "
                        "reads single-seed runs only")
    return _omniglot_run(workdir, images=images, data_dir=data_dir)
