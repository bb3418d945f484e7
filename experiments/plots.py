"""PNG plots of a run (matplotlib, Agg backend): curves, per-step accuracy, learned alphas."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import matplotlib

matplotlib.use("Agg")
import jax
import matplotlib.pyplot as plt
import numpy as np


def read_jsonl(path: pathlib.Path) -> list[dict]:
    path = pathlib.Path(path)
    if not path.is_file():
        return []
    out = []
    for raw_line in path.read_text().splitlines():
        line = raw_line.strip()
        if line:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut short by a kill
    return out


def plot_training_curves(workdir: pathlib.Path, out: pathlib.Path | None = None) -> pathlib.Path:
    workdir = pathlib.Path(workdir)
    records = read_jsonl(workdir / "metrics.jsonl")
    train = [r for r in records if r.get("kind") == "train"]
    val = [r for r in records if r.get("kind") == "val"]
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    if train:
        steps = [r["step"] for r in train]
        axes[0].plot(steps, [r["loss"] for r in train], label="train meta-loss")
        axes[1].plot(steps, [r["accuracy"] for r in train], label="train query acc")
        axes[2].plot(steps, [r["meta_lr"] for r in train])
    if val:
        steps = [r["step"] for r in val]
        axes[0].plot(steps, [r["val_loss"] for r in val], "o-", label="val loss")
        acc = np.array([r["val_accuracy"] for r in val])
        ci = np.array([r["val_accuracy_ci95"] for r in val])
        axes[1].errorbar(steps, acc, yerr=ci, fmt="o-", capsize=3, label="val acc (95% CI)")
    axes[0].set(title="loss", xlabel="outer step")
    axes[1].set(title="accuracy", xlabel="outer step")
    axes[2].set(title="meta learning rate", xlabel="outer step", yscale="log")
    for ax in axes[:2]:
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(workdir.name)
    fig.tight_layout()
    out = pathlib.Path(out or workdir / "training_curves.png")
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _leaf_name(path) -> str:
    return "/".join(str(getattr(k, "key", k)) for k in path)


def plot_inner_lrs(inner_lrs: Any, out: pathlib.Path, title: str = "") -> pathlib.Path:
    """The (learned) inner learning rate of every adapted tensor at every inner step."""
    flat = jax.tree_util.tree_flatten_with_path(inner_lrs)[0]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for path, leaf in flat:
        lr = np.asarray(leaf)
        if lr.ndim == 0:
            values = lr[None]
        elif lr.ndim == 1:
            values = lr
        else:  # per-parameter rates: mean over the parameter axes
            values = lr.reshape(lr.shape[0], -1).mean(axis=1)
        ax.plot(np.arange(1, len(values) + 1), values, "o-", label=_leaf_name(path))
    ax.set(xlabel="inner step", ylabel="alpha", title=title or "inner learning rates")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return pathlib.Path(out)


#: What a per-step curve's error bars are, by the results key that holds them.
PER_STEP_SPREADS = {"per_step_ci95_pct": "95% CI over tasks",
                    "per_step_seed_std_pct": "std over seeds"}


def per_step_curve(best: dict[str, Any]) -> tuple[list, list, str]:
    """``(mean, error bar, what the bar is)`` of a ``test_results.json`` ``best`` entry:
    one seed's 95% CI over the test tasks, or a population's std over its seeds.

    Example:
        >>> per_step_curve({"per_step_accuracy_pct": [20, 90], "per_step_seed_std_pct": [0, 1]})
        ([20, 90], [0, 1], 'std over seeds')
    """
    for key, what in PER_STEP_SPREADS.items():
        if key in best:
            return best["per_step_accuracy_pct"], best[key], what
    raise KeyError(f"no per-step spread ({', '.join(PER_STEP_SPREADS)}) in {sorted(best)}")


def plot_per_step_accuracy(curves: dict[str, tuple[Any, Any, str]], out: pathlib.Path,
                           title: str = "query accuracy after each inner step (test)",
                           ) -> pathlib.Path:
    """``curves``: label -> (mean accuracy per step 0..N, error bar per step, what the bar
    is: ``per_step_curve``), in percent; the legend names each curve's bar."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for label, (mean_values, err_values, what) in curves.items():
        mean, err = np.asarray(mean_values), np.asarray(err_values)
        steps = np.arange(len(mean))
        ax.errorbar(steps, mean, yerr=err, fmt="o-", capsize=3, label=f"{label} (± {what})")
    ax.set(xlabel="inner steps taken", ylabel="query accuracy (%)", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return pathlib.Path(out)
