"""Metrics of meta-parameters on fixed tasks: per task and step, and for validation.

``evaluate_params`` returns per-task query loss and accuracy after 0..N inner steps, on one
device or split over a mesh's ``tasks`` axis; ``validate`` / ``validate_population`` reduce
them to the validation metrics that training logs and ranks its checkpoints by.

Usage (``tasks`` from ``datasets.fixed_eval_tasks``; ``experiments.train`` validates so)::

    setup = wiring.get_setup(cfg)
    per_task = evaluate_params(setup, cfg, state.meta_params, tasks)
    per_task["accuracy"].shape          # (tasks, num_inner_steps_eval + 1)
    validate(setup, cfg, state.meta_params, tasks)["val_accuracy"]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from experiments.study_statistics import mean_ci95
from experiments.wiring import Setup, eval_batch_size, seed_state
from maml_jax import core, meta, parallel

__all__ = ["evaluate_params", "validate", "validate_population"]


def evaluate_params(setup: Setup, cfg: dict, meta_params: dict, tasks, mesh=None) -> dict[str, Any]:
    """Per-task query loss / accuracy after 0..N inner steps on fixed tasks (host arrays).

    With a ``mesh`` the tasks are split over its ``tasks`` axis (``parallel``).
    """
    n = cfg["num_inner_steps_eval"]   # the last trained step's rates repeat beyond training's
    lrs = core.extend_inner_lrs(meta_params["inner_lrs"], n)
    if mesh is None:
        task_losses, aux = meta.jit_evaluate_tasks(
            setup.eval_loss_fn, meta_params["params"], lrs, tasks, num_steps=n,
            batch_size=eval_batch_size(cfg), inner_grad_clip=setup.meta_config.inner_grad_clip,
            algorithm=setup.meta_config.algorithm)
    else:
        params, lrs, tasks = parallel.replicate((meta_params["params"], lrs, tasks), mesh)
        task_losses, aux = parallel.evaluate_tasks_sharded(
            setup.eval_loss_fn, params, lrs, tasks, num_steps=n, mesh=mesh,
            batch_size=eval_batch_size(cfg), inner_grad_clip=setup.meta_config.inner_grad_clip,
            algorithm=setup.meta_config.algorithm)
    return {"loss": parallel.host_array(task_losses),
            "accuracy": parallel.host_array(aux["accuracy"])}


def validate(setup: Setup, cfg: dict, meta_params: dict, tasks, mesh=None) -> dict[str, Any]:
    """Validation metrics of one set of meta-parameters: loss, accuracy (mean, 95% CI)
    after the last inner step, and the accuracy after every step."""
    res = evaluate_params(setup, cfg, meta_params, tasks, mesh)
    acc, ci = mean_ci95(res["accuracy"][:, -1]) if res["accuracy"].shape[0] > 1 else (
        res["accuracy"][:, -1].mean(), 0.0)
    return {"val_loss": float(res["loss"][:, -1].mean()), "val_accuracy": float(acc),
            "val_accuracy_ci95": float(ci),
            "val_accuracy_per_step": [float(a) for a in res["accuracy"].mean(axis=0)]}


def validate_population(setup: Setup, cfg: dict, state, tasks, mesh=None) -> dict[str, Any]:
    """``validate`` per seed; a population's val_accuracy is the mean over its seeds (which
    ranks its checkpoints), with the per-seed values alongside."""
    if cfg["num_seeds"] == 1:
        return validate(setup, cfg, state.meta_params, tasks, mesh)
    per = [validate(setup, cfg, seed_state(state, cfg, i).meta_params, tasks, mesh)
           for i in range(cfg["num_seeds"])]
    out = {k: float(np.mean([v[k] for v in per])) for k in ("val_loss", "val_accuracy",
                                                              "val_accuracy_ci95")}
    out["val_accuracy_per_step"] = [float(a) for a in
                                    np.mean([v["val_accuracy_per_step"] for v in per], axis=0)]
    out["val_accuracy_per_seed"] = [v["val_accuracy"] for v in per]
    out["val_loss_per_seed"] = [v["val_loss"] for v in per]
    return out

