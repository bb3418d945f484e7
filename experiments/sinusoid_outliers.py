"""Which sinusoid test tasks make MAML++'s 5-shot interval wide, and why.

    python -m experiments.sinusoid_outliers --config=experiments/configs/sinusoid_paper.py \\
        --workdir=runs/sinusoid_outliers [--config.KEY=VALUE ...] [--top=10]

Trains the comparison's methods (``experiments.sinusoid``; or reloads them from
``--workdir``), evaluates every method on the config's fixed 600 test tasks with K = 5
support points for up to 10 steps, and for the tasks with the largest final query loss
reports what distinguishes them:

- the task (amplitude and phase, fitted exactly from the query points: y = A sin(x - phi));
- where the 5 support points lie (the widest gap between them, and the covered range of
  the [-5, 5] input interval: points bunched together leave a sine underdetermined);
- the support loss after each step (does the inner loop diverge, i.e. are the learned
  rates too large for these gradients, or does it fit the support set and extrapolate
  badly?);
- the other methods' loss on the same tasks (a task every method fails on is a hard task,
  not a defect of one method).

Writes ``outliers.json`` and ``outliers.md`` into the workdir.
"""

from __future__ import annotations

import functools
import json
import pathlib
import sys
import time
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from absl import flags

import maml_jax as mj
from experiments import flag_parsing, sinusoid, wiring
from experiments.config_lib import ConfigError, compared_methods
from experiments.study_statistics import mean_ci95

__all__ = ["fit_sine", "support_coverage", "analyse", "to_markdown", "define_flags", "main"]


def fit_sine(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Exact ``(amplitude, phase)`` of ``y = A sin(x - phi)`` from noise-free points.

    ``A sin(x - phi) = A cos(phi) sin(x) - A sin(phi) cos(x)``: linear least squares in
    ``(A cos phi, A sin phi)``.

    Example:
      >>> x = np.linspace(-5, 5, 7); a, p = fit_sine(x, 2.0 * np.sin(x - 1.0))
      >>> round(a, 6), round(p, 6)
      (2.0, 1.0)
    """
    design = np.stack([np.sin(x), -np.cos(x)], axis=-1)
    (c, s), *_ = np.linalg.lstsq(design, y, rcond=None)
    return float(np.hypot(c, s)), float(np.arctan2(s, c) % (2 * np.pi))


def support_coverage(xs: np.ndarray, lo: float = -5.0, hi: float = 5.0) -> tuple[float, float]:
    """``(widest gap, covered range)`` of support inputs within ``[lo, hi]`` (edges included).

    Example:
      >>> support_coverage(np.array([1.0, -3.0, 2.0]))   # gaps 2, 4, 1, 3; range 2 - (-3)
      (4.0, 5.0)
    """
    pts = np.sort(np.concatenate([[lo], np.asarray(xs).ravel(), [hi]]))
    inner = np.sort(np.asarray(xs).ravel())
    return float(np.diff(pts).max()), float(inner[-1] - inner[0])


def _support_losses(loss_fn, meta_params, support, num_steps, inner_grad_clip=None):
    """Per-task support loss after 0..num_steps steps (the inner loop's own objective)."""
    return mj.jit_evaluate_tasks(loss_fn, meta_params["params"],
                                 mj.extend_inner_lrs(meta_params["inner_lrs"], num_steps),
                                 (support, support), num_steps=num_steps,
                                 inner_grad_clip=inner_grad_clip)[0]


def analyse(configs: Mapping[str, Mapping[str, Any]], params_by_method: dict, *, k: int = 5,
            num_steps: int = 10, top: int = 10, focus: str | None = None) -> dict:
    """The outlier analysis on the fixed test tasks (see the module docstring).

    Args:
        configs: ``{method name: checked config}`` (``compared_methods``); the test tasks
            are the focus method's (``test_seed``, ``num_test_tasks``, ``q_query_eval``).
        params_by_method: ``{method name: meta-parameters}``; each adapts with its
            config's model and inner-gradient clip, as it was meta-trained.
        k: Support points of the test tasks.
        num_steps: Inner steps.
        top: Tasks reported.
        focus: The method analysed (default: the last).
    """
    focus = focus or list(params_by_method)[-1]
    test = configs[focus]
    focus_setup = wiring.get_setup(test)
    support, query = mj.sinusoid_eval_tasks(test["test_seed"], test["num_test_tasks"], k,
                                            test["q_query_eval"])
    query_loss, support_loss = {}, {}
    for name, mp in params_by_method.items():
        setup = wiring.get_setup(configs[name])
        clip = setup.meta_config.inner_grad_clip
        query_loss[name] = np.asarray(mj.jit_evaluate_tasks(
            setup.eval_loss_fn, mp["params"], mj.extend_inner_lrs(mp["inner_lrs"], num_steps),
            (support, query), num_steps=num_steps, inner_grad_clip=clip)[0])
        support_loss[name] = np.asarray(_support_losses(setup.eval_loss_fn, mp, support,
                                                        num_steps, clip))
    final = query_loss[focus][:, num_steps]
    order = np.argsort(final)[::-1]
    xs, xq, yq = (np.asarray(a) for a in (support[0], query[0], query[1]))
    fits = [fit_sine(xq[i, :, 0], yq[i, :, 0]) for i in range(len(final))]
    amp = np.array([f[0] for f in fits])
    cover = np.array([support_coverage(xs[i, :, 0]) for i in range(len(final))])
    mean, ci = mean_ci95(final)
    rows = []
    for i in order[:top]:
        rows.append({
            "task": int(i), "amplitude": amp[i], "phase": fits[i][1],
            "support_x": [round(float(v), 2) for v in np.sort(xs[i, :, 0])],
            "widest_gap": cover[i, 0], "covered_range": cover[i, 1],
            "query_loss": {n: float(q[i, num_steps]) for n, q in query_loss.items()},
            "query_loss_steps": query_loss[focus][i].tolist(),
            "support_loss_steps": support_loss[focus][i].tolist(),
        })
    without = np.delete(final, order[:top])
    wm, wci = mean_ci95(without)
    # How much of the spread the task itself explains: rank correlations over all tasks.
    def rank_corr(a, b):
        ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
        return float(np.corrcoef(ra, rb)[0, 1])
    result = {
        "focus": focus, "k": k, "num_steps": num_steps, "num_tasks": len(final),
        "mean_ci95": [float(mean), float(ci)],
        "mean_ci95_without_top": [float(wm), float(wci)],
        "median": float(np.median(final)), "p99": float(np.percentile(final, 99)),
        "share_of_total_loss_top": float(final[order[:top]].sum() / final.sum()),
        # The inner loop overshooting on its own objective: the support loss rises above
        # its starting value at some step (an oscillating inner loop can end low again).
        "support_loss_rises": int((support_loss[focus][:, 1:].max(1) >
                                   support_loss[focus][:, 0]).sum()),
        "support_loss_rises_top": int((support_loss[focus][order[:top], 1:].max(1) >
                                       support_loss[focus][order[:top], 0]).sum()),
        "support_loss_rises_by_method": {
            n: int((v[:, 1:].max(1) > v[:, 0]).sum()) for n, v in support_loss.items()},
        "rank_corr_final_vs_amplitude": rank_corr(final, amp),
        "rank_corr_final_vs_widest_gap": rank_corr(final, cover[:, 0]),
        "rank_corr_between_methods": {n: rank_corr(final, q[:, num_steps])
                                      for n, q in query_loss.items() if n != focus},
        "amplitude_of_top_vs_all": [float(amp[order[:top]].mean()), float(amp.mean())],
        "widest_gap_of_top_vs_all": [float(cover[order[:top], 0].mean()),
                                     float(cover[:, 0].mean())],
        "per_method_mean_ci95": {n: [float(v) for v in mean_ci95(q[:, num_steps])]
                                 for n, q in query_loss.items()},
        "top": rows,
        "alpha_scaled": _alpha_scaled(focus_setup.eval_loss_fn, params_by_method[focus],
                                      support, query, num_steps, scales=(1.0, 0.75, 0.5),
                                      inner_grad_clip=focus_setup.meta_config.inner_grad_clip),
    }
    return result


def _alpha_scaled(loss_fn, meta_params, support, query, num_steps, scales, inner_grad_clip):
    """The focus method evaluated with all its learned rates multiplied by each scale: if
    the outliers come from steps too large for their support sets, smaller rates remove
    them at little cost to the typical task."""
    out = {}
    for scale in scales:
        # tree.map calls the lambda at once; the default only binds this iteration's scale.
        lrs = jax.tree.map(lambda a, s=scale: a * s,
                           mj.extend_inner_lrs(meta_params["inner_lrs"], num_steps))
        q = np.asarray(mj.jit_evaluate_tasks(loss_fn, meta_params["params"], lrs,
                                             (support, query), num_steps=num_steps,
                                             inner_grad_clip=inner_grad_clip)[0])
        final = q[:, num_steps]
        m, c = mean_ci95(final)
        out[str(scale)] = {"mean": float(m), "ci95": float(c), "median": float(np.median(final)),
                           "max": float(final.max()), "p99": float(np.percentile(final, 99))}
    return out


def to_markdown(res: dict) -> str:
    f = res["focus"]
    lines = [
        f"{f}, {res['k']}-shot, {res['num_steps']} steps, {res['num_tasks']} test tasks: "
        f"query MSE {res['mean_ci95'][0]:.3f} ± {res['mean_ci95'][1]:.3f} (95 % CI), median "
        f"{res['median']:.4f}, p99 {res['p99']:.3f}; without the top {len(res['top'])}: "
        f"{res['mean_ci95_without_top'][0]:.3f} ± {res['mean_ci95_without_top'][1]:.3f}. "
        f"The top {len(res['top'])} tasks carry {100 * res['share_of_total_loss_top']:.0f} % of "
        f"the total loss.",
        "",
        f"- support loss above its starting value at some inner step (the inner loop "
        f"overshooting on its own objective): {res['support_loss_rises']} of "
        f"{res['num_tasks']} tasks, {res['support_loss_rises_top']} of the top "
        f"{len(res['top'])}; per method: " +
        ", ".join(f"{n} {v}" for n, v in res["support_loss_rises_by_method"].items()),
        "- all learned rates scaled (mean ± 95 % CI / median / max of the final loss): " +
        "; ".join(f"x{k}: {v['mean']:.3f} ± {v['ci95']:.3f} / {v['median']:.4f} / "
                  f"{v['max']:.2f}" for k, v in res["alpha_scaled"].items()),
        f"- rank correlation of the final loss with the amplitude: "
        f"{res['rank_corr_final_vs_amplitude']:.2f}; with the widest gap between support "
        f"points: {res['rank_corr_final_vs_widest_gap']:.2f}",
        "- rank correlation with the other methods' final loss on the same tasks: " +
        ", ".join(f"{n} {v:.2f}" for n, v in res["rank_corr_between_methods"].items()),
        "",
        "| task | amplitude | phase | support x | widest gap | " +
        " | ".join(f"{n} loss" for n in res["top"][0]["query_loss"]) +
        f" | {f} support loss: start -> max over steps -> after {res['num_steps']} |",
        "|" + "---|" * (6 + len(res["top"][0]["query_loss"])),
    ]
    for r in res["top"]:
        lines.append(
            f"| {r['task']} | {r['amplitude']:.2f} | {r['phase']:.2f} | {r['support_x']} | "
            f"{r['widest_gap']:.2f} | " + " | ".join(f"{v:.3f}" for v in r["query_loss"].values())
            + f" | {r['support_loss_steps'][0]:.3f} -> max {max(r['support_loss_steps'][1:]):.3g}"
            f" -> {r['support_loss_steps'][-1]:.3g} |")
    return "\n".join(lines)


def define_flags(argv: list[str]) -> flags.FlagValues:
    """The script's flags on a fresh ``FlagValues`` (see ``experiments.flag_parsing``);
    ``argv`` is the full command line (``--config.KEY=VALUE`` overrides are read from it)."""
    fv = flags.FlagValues()
    flag_parsing.define_config_flag(
        fv, argv, required=False, default="experiments/configs/sinusoid_paper.py",
        help_string="sinusoid comparison config file, FILE.py[:variant]; override its keys "
                    "with --config.KEY=VALUE")
    flags.DEFINE_string("workdir", None, "trained methods and the outputs", flag_values=fv)
    flags.DEFINE_integer("iterations", None, "train this many iterations (a whole number of "
                         "epochs: sets num_epochs)", lower_bound=1, flag_values=fv)
    flags.DEFINE_integer("top", 10, "tasks to report", lower_bound=1, flag_values=fv)
    flags.DEFINE_string("focus", None, "method to analyse (default: the last)",
                        flag_values=fv)
    flags.mark_flag_as_required("workdir", flag_values=fv)
    return fv


def main(argv: list[str] | None = None) -> int:
    """``python -m experiments.sinusoid_outliers``; returns the exit status (2: bad flags or
    config, ``flag_parsing.run_main``).

    Example (``--workdir`` is required):
        >>> main(["--config=experiments/configs/sinusoid_paper.py:smoke"])
        2
    """
    full = flag_parsing.program_argv("python -m experiments.sinusoid_outliers", argv)
    return flag_parsing.run_main(functools.partial(_main, full))


def _main(full: list[str]) -> int:
    from flax import serialization
    fv = define_flags(full)
    if (rest := flag_parsing.parse_or_help(fv, full, __doc__, config_flag="config")) is None:
        return 0
    flag_parsing.check_no_arguments(rest)
    config = sinusoid.with_iterations(fv["config"].value, fv["iterations"].value)
    configs = compared_methods(config)
    focus = fv["focus"].value
    if focus is not None and focus not in configs:
        raise ConfigError(f"--focus={focus!r} is not a method of the comparison: {list(configs)}")
    work = pathlib.Path(fv["workdir"].value)
    work.mkdir(parents=True, exist_ok=True)
    params = {}
    for name, cfg in configs.items():
        f = work / f"{name}.msgpack"
        if f.is_file():
            params[name] = serialization.msgpack_restore(f.read_bytes())
            continue
        run = sinusoid.train_sinusoid(cfg)
        print(f"{name}: trained in {run.seconds:.0f} s", flush=True)
        params[name] = jax.device_get(run.meta_params)
        f.write_bytes(serialization.msgpack_serialize(params[name]))
    res = analyse(configs, params, top=fv["top"].value, focus=focus)
    first = next(iter(configs.values()))
    res.update(date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               command="python -m experiments.sinusoid_outliers " + " ".join(full[1:]),
               iterations=first["num_epochs"] * first["iterations_per_epoch"])
    (work / "outliers.json").write_text(json.dumps(res, indent=1, default=float))
    md = to_markdown(res)
    (work / "outliers.md").write_text(md + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
