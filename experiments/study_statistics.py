"""The study's statistics: overshoot, per-run trajectory statistics, seed-to-seed spread.

Plain numpy on per-task query losses after 0..S inner steps (``(tasks, S + 1)`` arrays),
tested against hand-computed values; ``summarize`` applies them to evaluated runs
(``experiments.study_runs.RunEval``) grouped by setting and method.

Example:
    >>> losses = np.array([[1.0, 0.5, 0.6], [1.0, 0.9, 0.8]])
    >>> stats = trajectory_statistics(losses, trained_steps=2)
    >>> stats["final_mean"], stats["overshoot_any_trained"]
    (0.7, 0.5)
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # the runs are only read here: no import of the evaluation at run time
    from experiments.study_runs import RunEval

__all__ = ["OVERSHOOT_MARGIN", "overshoot", "trajectory_statistics", "seed_spread",
           "group_runs", "summarize"]

OVERSHOOT_MARGIN = 0.05


def overshoot(losses: np.ndarray, margin: float = OVERSHOOT_MARGIN) -> np.ndarray:
    """Which tasks overshoot at which step: ``loss[t + 1] > (1 + margin) * loss[t]``.

    Args:
      losses: ``(tasks, steps + 1)`` query losses after 0..steps inner steps (losses are
        non-negative, so a relative margin is meaningful).
      margin: the relative rise that counts (0.05: more than 5 % above the step before).

    Returns:
      Boolean ``(tasks, steps)``; column ``t`` is the move from step ``t`` to ``t + 1``.

    Example:
      >>> overshoot(np.array([[1.0, 0.5, 0.6], [1.0, 0.9, 0.8]]), 0.1)
      array([[False,  True],
             [False, False]])
    """
    losses = np.asarray(losses, np.float64)
    if losses.ndim != 2 or losses.shape[1] < 2:
        raise ValueError(f"losses must be (tasks, steps + 1) with >= 1 step, got {losses.shape}")
    return losses[:, 1:] > (1.0 + margin) * losses[:, :-1]


def trajectory_statistics(losses: np.ndarray, trained_steps: int,
                          margin: float = OVERSHOOT_MARGIN,
                          accuracy: np.ndarray | None = None) -> dict[str, Any]:
    """The per-run statistics of the study, from per-task losses after 0..S steps.

    Args:
      losses: ``(tasks, S + 1)``; ``S >= trained_steps``.
      trained_steps: N, the inner steps the run was trained with ("final" = after N).
      margin: relative margin of ``overshoot``.
      accuracy: optional ``(tasks, S + 1)`` accuracies.

    Returns:
      A dict of plain floats / lists: ``mean``, ``median`` and ``std`` (across tasks) per
      step; ``final_*`` after N steps: mean, std, p90, p99 (linear interpolation, as
      ``np.percentile``); ``last_mean`` after S steps; ``overshoot_any_trained`` (fraction
      of tasks that overshoot at some step t < N), ``overshoot_any`` (t < S),
      ``overshoot_per_step`` (per t); ``trajectory_mean`` (mean over tasks of the mean loss
      after 0..N steps); ``nonfinite_tasks``; and per-step ``accuracy_mean`` if given.
    """
    losses = np.asarray(losses, np.float64)
    if not np.isfinite(losses).all():   # a diverged task: its inf / NaN shows in the means
        with np.errstate(invalid="ignore", over="ignore"):
            return _trajectory_statistics(losses, trained_steps, margin, accuracy)
    return _trajectory_statistics(losses, trained_steps, margin, accuracy)


def _trajectory_statistics(losses, trained_steps, margin, accuracy):
    n = int(trained_steps)
    if not 1 <= n <= losses.shape[1] - 1:
        raise ValueError(f"trained_steps={n} outside 1..{losses.shape[1] - 1} evaluated steps")
    rises = overshoot(losses, margin)
    final = losses[:, n]
    stats = {
        "num_tasks": int(losses.shape[0]),
        "trained_steps": n,
        "evaluated_steps": int(losses.shape[1] - 1),
        "margin": float(margin),
        "mean": losses.mean(0).tolist(),
        "median": np.median(losses, 0).tolist(),
        "std": losses.std(0).tolist(),
        "final_mean": float(final.mean()),
        "final_std": float(final.std()),
        "final_p90": float(np.percentile(final, 90)),
        "final_p99": float(np.percentile(final, 99)),
        "last_mean": float(losses[:, -1].mean()),
        "overshoot_any_trained": float(rises[:, :n].any(1).mean()),
        "overshoot_any": float(rises.any(1).mean()),
        "overshoot_per_step": rises.mean(0).tolist(),
        "trajectory_mean": float(losses[:, :n + 1].mean()),
        "nonfinite_tasks": int((~np.isfinite(losses)).any(1).sum()),
    }
    if accuracy is not None:
        acc = np.asarray(accuracy, np.float64)
        stats["accuracy_mean"] = acc.mean(0).tolist()
        stats["final_accuracy"] = float(acc[:, n].mean())
    return stats


def seed_spread(values: list[float]) -> float | None:
    """Seed-to-seed standard deviation (``ddof=1``); None for fewer than two seeds."""
    values = [float(v) for v in values]
    return float(np.std(values, ddof=1)) if len(values) > 1 else None


def group_runs(runs: list[RunEval]) -> dict[tuple[str, str], list[RunEval]]:
    """Runs by (setting, method): settings sorted, methods in the order they were given
    (a grid's order: the baseline first), seeds ascending."""
    groups: dict[tuple[str, str], list[RunEval]] = {}
    for r in runs:
        groups.setdefault((r.setting, r.method), []).append(r)
    order = {m: i for i, m in enumerate(dict.fromkeys(r.method for r in runs))}
    keys = sorted(groups, key=lambda k: (k[0], order[k[1]]))
    return {k: sorted(groups[k], key=lambda r: r.seed) for k in keys}


def summarize(runs: list[RunEval], margin: float = OVERSHOOT_MARGIN) -> dict[str, Any]:
    """Statistics per run and per (setting, method) group, with the seed-to-seed spread."""
    out = {}
    for (setting, method), members in group_runs(runs).items():
        per_run = [trajectory_statistics(r.losses, r.trained_steps, margin, r.accuracy)
                   for r in members]
        pooled = trajectory_statistics(np.concatenate([r.losses for r in members]),
                                       members[0].trained_steps, margin,
                                       None if members[0].accuracy is None else
                                       np.concatenate([r.accuracy for r in members]))
        group = {"setting": setting, "method": method, "seeds": [r.seed for r in members],
                 "workdirs": [r.workdir for r in members], "per_seed": per_run,
                 "pooled": pooled,
                 "seed_std_final_mean": seed_spread([s["final_mean"] for s in per_run])}
        seconds = [r.train_seconds for r in members if r.train_seconds is not None]
        if seconds:
            group["train_seconds_mean"] = float(np.mean(seconds))
        if members[0].accuracy is not None:
            group["seed_std_final_accuracy"] = seed_spread([s["final_accuracy"] for s in per_run])
        out[f"{setting}/{method}"] = group
    return out


def mean_ci95(values: Any, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Mean and half-width of the normal 95% confidence interval (1.96 * std / sqrt(n)).

    Example:
        >>> [round(float(v), 4) for v in mean_ci95([1.0, 2.0, 3.0, 4.0])]
        [2.5, 1.2652]
    """
    v = np.asarray(values, dtype=np.float64)
    n = v.shape[axis]
    if n < 2:
        raise ValueError(f"need at least 2 values for a confidence interval, got {n}")
    return v.mean(axis=axis), 1.96 * v.std(axis=axis, ddof=1) / math.sqrt(n)
