"""The claims of MAML++, measured on trained runs: trajectories, spread, overshoot, seeds.

    python -m experiments.study RUN_DIR [RUN_DIR ...] --out=runs/study [--margin=0.05]

Every run (an Omniglot ``experiments.train`` workdir, or a sinusoid run written by
``experiments.study_grid``) is evaluated on the same fixed test tasks of its setting, for
0..2N inner steps (N = the steps it was trained with; past N the learned rates are
extended as ``maml_jax.extend_inner_lrs`` does). Runs are grouped by method and setting
(sinusoid: K support points; Omniglot: ways and shots); seeds of one method form a group.

Per method and setting it reports: query loss (and accuracy, for classification) after
every step; across-task standard deviation, 90th and 99th percentile of the loss after N
steps; the overshoot rate (see ``overshoot``); the mean loss over the trajectory; and,
with several seeds, the seed-to-seed standard deviation of the final result.

Writes ``study.json``, ``study.md`` and the plots ``trajectories_<setting>.png``,
``final_loss_hist_<setting>.png``, ``inner_lrs_<method>_<setting>.png`` and
``msl_weights.png`` into ``--out``. A run that failed (``failed.json``, e.g. a non-finite
training loss) or cannot be evaluated is listed as failed with its message; the study
goes on with the others.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import sys
import time
from typing import Any

import jax
import numpy as np
from absl import flags

import maml_jax as mj

__all__ = [
    "OVERSHOOT_MARGIN",
    "RunEval",
    "RunFailed",
    "overshoot",
    "trajectory_statistics",
    "seed_spread",
    "evaluate_run",
    "summarize",
    "markdown_table",
    "make_plots",
    "run_study",
    "main",
]

OVERSHOOT_MARGIN = 0.05
SINUSOID_TEST_SEED = 2026          # the study's own fixed test tasks, whatever the run's seed
SINUSOID_TEST_TASKS = 600
SINUSOID_QUERY_POINTS = 100


# ---------------------------------------------------------------------------------------
# statistics (numpy; tested against hand-computed values)
# ---------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------
# evaluating runs
# ---------------------------------------------------------------------------------------

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


STUDY_CACHE = "study_eval.npz"   # per Omniglot workdir: its test-task evaluation


class RunFailed(RuntimeError):
    """A run that failed in training or cannot be evaluated."""


def _sinusoid_run(workdir: pathlib.Path, info: dict) -> RunEval:
    from flax import serialization
    meta_params = serialization.msgpack_restore((workdir / "meta_params.msgpack").read_bytes())
    snaps_raw = serialization.msgpack_restore((workdir / "inner_lr_snapshots.msgpack").read_bytes())
    n, k = int(info["trained_steps"]), int(info["k_shot"])
    loss_fn = mj.make_loss_fn(mj.MLP(hidden=tuple(info["hidden"])), "mse")
    tasks = mj.sinusoid_eval_tasks(SINUSOID_TEST_SEED, SINUSOID_TEST_TASKS, k,
                                   SINUSOID_QUERY_POINTS)
    # Runs recorded before the inner-gradient clip existed were trained without one.
    losses, _ = mj.jit_evaluate_tasks(loss_fn, meta_params["params"], meta_params["inner_lrs"],
                                      tasks, num_steps=2 * n,
                                      inner_grad_clip=info.get("inner_grad_clip"))
    return RunEval(str(workdir), "sinusoid", info["method"], f"K={k}", int(info["seed"]), n,
                   np.asarray(losses), None, {int(i): v for i, v in snaps_raw.items()},
                   bool(info["msl"]), int(info["msl_epochs"]), int(info["num_epochs"]))


def _omniglot_run(workdir: pathlib.Path, cfg: dict, images=None, data_dir=None) -> RunEval:
    from experiments import checkpoints, datasets, wiring
    if cfg.get("num_seeds", 1) > 1:
        # One RunEval per workdir and seed is what the study groups; a population holds
        # several seeds in one workdir. Train the grid's seeds as separate cells instead.
        raise RunFailed(f"{workdir} is a population run ({cfg['num_seeds']} seeds); the study "
                        "reads single-seed runs only")
    all_images, splits = images if images is not None else datasets.load_images(cfg, data_dir)
    datasets.check_task_requests(cfg, splits, all_images)
    setup = wiring.get_setup(cfg)
    mngr = checkpoints.checkpoint_manager(workdir, cfg["keep_best"], read_only=True)
    try:
        ranked = checkpoints.ranked_checkpoints(mngr)
        if not ranked:
            raise RunFailed(f"no checkpoint with a validation accuracy in {workdir}")
        template = wiring.init_state(cfg, setup)
        best, _ = checkpoints.restore_checkpoint(mngr, ranked[0][0], template)
        # The rates at every retained checkpoint (best-k and the latest) + the initial ones.
        snaps = {0: jax.device_get(template.meta_params["inner_lrs"])}
        for step in sorted(mngr.all_steps()):
            state = best if step == ranked[0][0] else checkpoints.restore_checkpoint(
                mngr, step, template)[0]
            snaps[int(step)] = jax.device_get(state.meta_params["inner_lrs"])
    finally:
        mngr.close()
    n = int(cfg["num_inner_steps"])
    # The evaluation is cached in the workdir, keyed by what determines it, so that a
    # study over a growing grid evaluates each finished run once.
    key = {"step": int(ranked[0][0]), "num_test_tasks": cfg["num_test_tasks"],
           "test_seed": cfg["test_seed"], "num_steps": 2 * n}
    cache = workdir / STUDY_CACHE
    cached = np.load(cache) if cache.is_file() else None
    if cached is not None and json.loads(str(cached["key"])) == key:
        losses, accuracy = cached["losses"], cached["accuracy"]
    else:
        tasks = datasets.fixed_eval_tasks(
            jax.device_put(datasets.select_classes(all_images, splits["test"])), cfg, "test")
        mp = best.meta_params
        losses, aux = mj.jit_evaluate_tasks(setup.eval_loss_fn, mp["params"], mp["inner_lrs"],
                                            tasks, num_steps=2 * n,
                                            batch_size=wiring.eval_batch_size(cfg),
                                            inner_grad_clip=setup.meta_config.inner_grad_clip)
        losses, accuracy = np.asarray(losses), np.asarray(aux["accuracy"])
        np.savez(cache, losses=losses, accuracy=accuracy, key=json.dumps(key))
    return RunEval(str(workdir), "omniglot", cfg["name"], f"{cfg['num_ways']}w{cfg['k_shot']}s",
                   int(cfg["seed"]), n, losses, accuracy, snaps,
                   bool(cfg["msl"]), int(cfg["msl_epochs"]), int(cfg["num_epochs"]))


def evaluate_run(workdir: str | pathlib.Path, *, images=None, data_dir=None) -> RunEval:
    """Evaluates one run directory; raises ``RunFailed`` with the reason if it cannot."""
    workdir = pathlib.Path(workdir)
    failed = workdir / "failed.json"
    if failed.is_file():
        raise RunFailed(json.loads(failed.read_text()).get("error", "failed"))
    if (workdir / "run.json").is_file():
        info = json.loads((workdir / "run.json").read_text())
        if not info.get("finished"):
            raise RunFailed(f"{workdir}: training did not finish")
        return _sinusoid_run(workdir, info)
    from experiments import checkpoints
    cfg = checkpoints.read_workdir_config(workdir)
    if cfg is None:
        raise RunFailed(f"{workdir} is neither a sinusoid run (run.json) nor a training "
                        "workdir (config.json)")
    summary = workdir / "train_summary.json"
    if not summary.is_file() or not json.loads(summary.read_text()).get("finished"):
        raise RunFailed(f"{workdir}: training did not finish (no finished train_summary.json)")
    return _omniglot_run(workdir, cfg, images=images, data_dir=data_dir)


# ---------------------------------------------------------------------------------------
# the study
# ---------------------------------------------------------------------------------------

def _group(runs: list[RunEval]) -> dict[tuple[str, str], list[RunEval]]:
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
    for (setting, method), members in _group(runs).items():
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
        if members[0].accuracy is not None:
            group["seed_std_final_accuracy"] = seed_spread([s["final_accuracy"] for s in per_run])
        out[f"{setting}/{method}"] = group
    return out


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
    groups = _group(runs)
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


def run_study(workdirs: list[str | pathlib.Path], out: str | pathlib.Path, *,
              margin: float = OVERSHOOT_MARGIN, images=None, data_dir=None,
              command: str = "") -> dict[str, Any]:
    """Evaluates every run, writes study.json / study.md / plots into ``out``; returns the JSON."""
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs, failed = [], []
    for w in workdirs:
        try:
            runs.append(evaluate_run(w, images=images, data_dir=data_dir))
        except (RunFailed, FileNotFoundError, ValueError, mj.NonFiniteLossError) as err:
            failed.append({"workdir": str(w), "error": str(err)})
    summary = summarize(runs, margin)
    plots = make_plots(runs, out) if runs else []
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    result = {"date": stamp, "command": command, "margin": margin,
              "device": jax.devices()[0].device_kind, "groups": summary, "failed": failed,
              "plots": plots}
    (out / "study.json").write_text(json.dumps(result, indent=1))
    md = [f"# Study ({stamp})", "", f"Command: `{command}`" if command else "",
          f"Device: {result['device']}. N = trained inner steps; every run is evaluated to 2N "
          f"on its setting's fixed test tasks. Overshoot: loss after step t+1 > "
          f"(1 + {margin}) x loss after step t, for some t (<N, <2N).", "",
          markdown_table(summary) if summary else "(no run could be evaluated)", ""]
    if failed:
        md += ["Failed runs:", ""] + [f"- `{f['workdir']}`: {f['error']}" for f in failed] + [""]
    (out / "study.md").write_text("\n".join(md))
    return result


def define_flags() -> flags.FlagValues:
    """The script's flags on a fresh ``FlagValues``; the run directories are positional."""
    fv = flags.FlagValues()
    flags.DEFINE_string("out", None, "directory for study.json, study.md, plots",
                        flag_values=fv)
    flags.DEFINE_float("margin", OVERSHOOT_MARGIN, "relative rise that counts as "
                       "overshooting", lower_bound=0.0, flag_values=fv)
    flags.DEFINE_string("data-dir", None, "Omniglot archives (Omniglot runs only)",
                        flag_values=fv)
    flags.mark_flag_as_required("out", flag_values=fv)
    return fv


def main(argv: list[str] | None = None) -> int:
    """``python -m experiments.study RUN_DIR ... --out=DIR``; 0 if any run was evaluated.

    Example:
        >>> main(["runs/a", "runs/b", "--out=runs/study"])  # doctest: +SKIP
        0
    """
    from experiments import flag_parsing
    from experiments.config_lib import ConfigError
    full = flag_parsing.program_argv("python -m experiments.study", argv)
    fv = define_flags()
    try:
        rest = flag_parsing.parse_or_help(fv, full, __doc__)
        if rest is None:
            return 0
        workdirs = flag_parsing.run_dirs(rest)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = fv["out"].value
    res = run_study(workdirs, out, margin=fv["margin"].value, data_dir=fv["data-dir"].value,
                    command="python -m experiments.study " + " ".join(full[1:]))
    print((pathlib.Path(out) / "study.md").read_text())
    return 0 if res["groups"] else 1


if __name__ == "__main__":
    sys.exit(main())
