"""The study's report: its markdown table and plots.

``markdown_table`` turns ``study_statistics.summarize``'s groups into one row per setting and
method; ``make_plots`` draws the per-task trajectories, final-loss histograms, learned-rate
heatmaps and MSL weights of evaluated runs (``study_runs.RunEval``); ``study_markdown`` is
the whole ``study.md``.

Example:
    >>> pooled = {"final_mean": 0.5, "final_std": 0.1, "final_p90": 0.6, "final_p99": 0.7,
    ...           "overshoot_any_trained": 0.0, "overshoot_any": 0.25,
    ...           "trajectory_mean": 0.8, "last_mean": 0.45}
    >>> group = {"setting": "K=5", "method": "MAML", "seeds": [0, 1], "pooled": pooled,
    ...          "seed_std_final_mean": 0.02}
    >>> print(markdown_table({"K=5/MAML": group}).splitlines()[-1])
    | K=5 | MAML | 2 | 0.500 ± 0.020 | 0.100 | 0.600 | 0.700 | 0.0 % | 25.0 % | 0.800 | 0.450 |
"""

from __future__ import annotations

import pathlib
from typing import TYPE_CHECKING, Any

import jax
import numpy as np

import maml_jax as mj
from experiments.study_statistics import group_runs

if TYPE_CHECKING:
    from experiments.study_runs import RunEval

__all__ = ["markdown_table", "make_plots", "study_markdown"]


def _fmt(x: float | None, digits: int = 3) -> str:
    if x is None:
        return "-"
    if not np.isfinite(x):
        return str(x)
    return f"{x:.{digits}g}" if abs(x) >= 1e3 or (x != 0 and abs(x) < 1e-3) else f"{x:.{digits}f}"


def markdown_table(summary: dict[str, Any]) -> str:
    """One row per (setting, method); pooled over seeds, with the seed-to-seed std."""
    has_acc = any("seed_std_final_accuracy" in g for g in summary.values())
    head = ["setting", "method", "seeds", "loss after N (mean ± seed std)", "task std",
            "p90", "p99", "overshoot <N", "overshoot <2N", "trajectory mean", "loss after 2N"]
    if has_acc:
        head += ["accuracy after N % (± seed std)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for g in summary.values():
        p = g["pooled"]
        seed_std = g["seed_std_final_mean"]
        cells = [g["setting"], g["method"], str(len(g["seeds"])),
                 f"{_fmt(p['final_mean'])} ± {_fmt(seed_std)}" if seed_std is not None
                 else _fmt(p["final_mean"]),
                 _fmt(p["final_std"]), _fmt(p["final_p90"]), _fmt(p["final_p99"]),
                 f"{100 * p['overshoot_any_trained']:.1f} %", f"{100 * p['overshoot_any']:.1f} %",
                 _fmt(p["trajectory_mean"]), _fmt(p["last_mean"])]
        if has_acc:
            if "final_accuracy" in p:
                s = g.get("seed_std_final_accuracy")
                cells.append(f"{100 * p['final_accuracy']:.2f}" +
                             (f" ± {100 * s:.2f}" if s is not None else ""))
            else:
                cells.append("-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _tree_rows(lrs: Any) -> tuple[list[str], np.ndarray]:
    """Learned rates as a (tensors, steps) matrix; per-parameter rates by their mean |alpha|."""
    names, rows = [], []
    for path, value in jax.tree_util.tree_flatten_with_path(lrs)[0]:
        leaf = np.asarray(value, np.float64)
        if leaf.ndim == 0:
            continue  # a fixed scalar rate: nothing learned to show
        names.append("/".join(str(getattr(p, "key", p)) for p in path))
        rows.append(np.abs(leaf).reshape(leaf.shape[0], -1).mean(1))
    return names, (np.stack(rows) if rows else np.zeros((0, 0)))


def make_plots(runs: list[RunEval], out: pathlib.Path) -> list[str]:
    """Trajectories, final-loss histograms, learned-rate heatmaps, MSL weights."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    groups = group_runs(runs)
    settings = sorted({s for s, _ in groups})
    for setting in settings:
        members = [(m, rs[0]) for (s, m), rs in groups.items() if s == setting]
        # Per-task trajectories of the first seed: thin lines, median, 10-90 % band.
        fig, axes = plt.subplots(1, len(members), figsize=(3.2 * len(members), 3.4),
                                 sharey=True, squeeze=False)
        finite = np.concatenate([r.losses[np.isfinite(r.losses)] for _, r in members])
        lo, hi = max(float(np.percentile(finite, 0.5)), 1e-6), float(np.percentile(finite, 99.9))
        for ax, (method, r) in zip(axes[0], members, strict=True):
            steps = np.arange(r.losses.shape[1])
            for row in r.losses[:: max(1, len(r.losses) // 100)]:
                ax.plot(steps, row, color="0.6", lw=0.3, alpha=0.5)
            ax.fill_between(steps, np.percentile(r.losses, 10, 0), np.percentile(r.losses, 90, 0),
                            alpha=0.3, label="10-90 %")
            ax.plot(steps, np.median(r.losses, 0), color="C3", lw=2, label="median")
            ax.axvline(r.trained_steps, color="k", ls="--", lw=0.8)
            ax.set(title=method, xlabel="inner steps", yscale="log", ylim=(lo, hi))
        axes[0, 0].set_ylabel(f"query loss ({setting}, seed {members[0][1].seed})")
        axes[0, 0].legend(fontsize=7)
        fig.tight_layout()
        name = f"trajectories_{setting.replace('=', '')}.png"
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        files.append(name)

        # Final-loss histograms (after N steps, all seeds pooled), log bins.
        fig, ax = plt.subplots(figsize=(6, 3.6))
        pooled = {m: np.concatenate([r.losses[:, r.trained_steps] for r in groups[(setting, m)]])
                  for m, _ in members}
        allf = np.concatenate([v[np.isfinite(v) & (v > 0)] for v in pooled.values()])
        bins = np.logspace(np.log10(allf.min()), np.log10(allf.max()), 40) if allf.size else 20
        for m, v in pooled.items():
            ax.hist(v[np.isfinite(v)], bins=bins, histtype="step", lw=1.4, label=m)
        ax.set(xscale="log", xlabel="query loss after N steps", ylabel="tasks",
               title=f"{setting}: per-task final loss")
        ax.legend(fontsize=7)
        fig.tight_layout()
        name = f"final_loss_hist_{setting.replace('=', '')}.png"
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        files.append(name)

        # Learned rates per tensor and step, at several points of training (first seed).
        for method, r in members:
            snaps = sorted(r.inner_lr_snapshots)
            if not snaps or not _tree_rows(r.inner_lr_snapshots[snaps[-1]])[0]:
                continue
            pick = sorted({snaps[round(i)] for i in np.linspace(0, len(snaps) - 1, 4)})
            mats = [_tree_rows(r.inner_lr_snapshots[i]) for i in pick]
            vmax = max(float(m.max()) for _, m in mats)
            positive = [float(m[m > 0].min()) for _, m in mats if (m > 0).any()]
            # Log colours: rates of one model often span two or more decades.
            norm = matplotlib.colors.LogNorm(vmin=max(min(positive, default=vmax / 1e3),
                                                      vmax / 1e4), vmax=vmax)
            fig, axes = plt.subplots(1, len(pick), squeeze=False,
                                     figsize=(2.6 * len(pick) + 1.5, 0.35 * len(mats[0][0]) + 1.6))
            for ax, it, (names, mat) in zip(axes[0], pick, mats, strict=True):
                im = ax.imshow(mat, aspect="auto", cmap="viridis", norm=norm)
                ax.set(title=f"iteration {it}", xlabel="inner step",
                       xticks=range(mat.shape[1]), xticklabels=range(1, mat.shape[1] + 1))
                ax.set_yticks(range(len(names)), names if ax is axes[0, 0] else [""] * len(names),
                              fontsize=7)
            fig.colorbar(im, ax=axes[0].tolist(), label="alpha (mean |alpha| per tensor, log)")
            fig.suptitle(f"{method}, {setting}: learned inner rates", fontsize=9)
            name = f"inner_lrs_{method}_{setting.replace('=', '')}.png".replace("+", "p")
            fig.savefig(out / name, dpi=110)
            plt.close(fig)
            files.append(name)

    # MSL weights over epochs, for every (steps, msl_epochs) used by an MSL run.
    shapes = sorted({(r.trained_steps, r.msl_epochs, r.num_epochs) for r in runs if r.msl})
    if shapes:
        fig, axes = plt.subplots(1, len(shapes), figsize=(4.2 * len(shapes), 3.2), squeeze=False)
        for ax, (n, me, ne) in zip(axes[0], shapes, strict=True):
            epochs = np.arange(0, max(ne, me + 1))
            w = np.stack([np.asarray(mj.msl_weights(e, n, me)) for e in epochs])
            for i in range(n):
                ax.plot(epochs, w[:, i], label=f"step {i + 1}")
            ax.set(title=f"MSL weights: N={n}, annealed over {me} epochs", xlabel="epoch",
                   ylabel="weight of the query loss after step i")
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "msl_weights.png", dpi=110)
        plt.close(fig)
        files.append("msl_weights.png")
    return files


def study_markdown(result: dict[str, Any]) -> str:
    """``study.md``: the header, the table of ``result["groups"]`` and the failed runs.

    ``result`` is what ``experiments.study.run_study`` writes to ``study.json``.

    Example:
        >>> print(study_markdown({"date": "2026-12-04 10:00 UTC", "command": "", "margin": 0.05,
        ...                       "device": "cpu", "groups": {},
        ...                       "failed": [{"workdir": "runs/a", "error": "no config"}]}))
        ... # doctest: +ELLIPSIS
        # Study (2026-12-04 10:00 UTC)
        ...
        (no run could be evaluated)
        <BLANKLINE>
        Failed runs:
        <BLANKLINE>
        - `runs/a`: no config
        <BLANKLINE>
    """
    command, margin = result["command"], result["margin"]
    md = [f"# Study ({result['date']})", "", f"Command: `{command}`" if command else "",
          f"Device: {result['device']}. N = trained inner steps; every run is evaluated to 2N "
          f"on its setting's fixed test tasks. Overshoot: loss after step t+1 > "
          f"(1 + {margin}) x loss after step t, for some t (<N, <2N).", "",
          markdown_table(result["groups"]) if result["groups"] else
          "(no run could be evaluated)", ""]
    if result["failed"]:
        md += (["Failed runs:", ""]
               + [f"- `{f['workdir']}`: {f['error']}" for f in result["failed"]] + [""])
    return "\n".join(md)
