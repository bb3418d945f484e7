"""Test accuracy of a trained run on the config's fixed test tasks (600 by default).

Usage (from the repository root)::

    python -m experiments.evaluate --workdir runs/omniglot_5w1s_mamlpp [--data-dir DIR] \\
        [--num-tasks T] [--ensemble-size E]

Reports mean +- 95% CI over tasks for (a) the checkpoint with the best validation accuracy
and (b) the MAML++ reference's ensemble: the final-step logits of the top-E checkpoints
(E = 5, fewer if fewer are stored) averaged per query image. Writes
``test_results.json`` (with per-task accuracies in the fixed task order, for paired
comparisons between runs), ``per_step_accuracy.png`` (query accuracy after each inner step),
``inner_lrs_best.png`` and, when sibling runs in the same parent directory also have
``test_results.json``, ``<parent>/compare_per_step_accuracy.png``.
"""

from __future__ import annotations

import functools
import pathlib
import sys
from typing import Any

import jax
import numpy as np
from absl import flags

from experiments import checkpoints, datasets, flag_parsing, plots, task_metrics, wiring
from experiments.study_statistics import mean_ci95
from experiments.trained_workdir import TrainedWorkdir, open_trained_workdir
from maml_jax import parallel

__all__ = ["run_evaluation", "format_table", "define_flags", "main"]


def _ci(values) -> tuple[float, float]:
    values = np.asarray(values, np.float64)
    if values.shape[0] < 2:
        return float(values.mean()), 0.0
    m, c = mean_ci95(values)
    return float(m), float(c)


def _per_task(task_accuracy) -> list[float]:
    # Per-task accuracies, in the fixed task order: paired comparisons between runs.
    return [round(100 * float(a), 4) for a in task_accuracy]


def _evaluate_seed(run: TrainedWorkdir, ens: int, tasks, seed_index: int) -> dict[str, Any]:
    """Best checkpoint and top-``ens`` ensemble of one seed (of a population) on ``tasks``."""
    cfg, setup, mesh, workdir = run.cfg, run.setup, run.mesh, run.workdir
    (xs, ys), (xq, yq) = tasks
    members, logits_sum, best = [], None, None
    for rank, (step, val_acc) in enumerate(run.ranked[:ens]):
        state, info = run.restore(step)
        mp = wiring.seed_state(state, cfg, seed_index).meta_params
        if mesh is None:
            logits = np.asarray(setup.final_logits(mp["params"], mp["inner_lrs"], (xs, ys), xq))
        else:  # the test tasks split over the devices, as in training
            mp = parallel.replicate(mp, mesh)
            logits = parallel.host_array(setup.final_logits(
                mp["params"], mp["inner_lrs"], (xs, ys), xq,
                sharding=parallel.task_sharding(mesh)))
        task_acc = (logits.argmax(-1) == parallel.host_array(yq)).mean(axis=1)
        m, c = _ci(task_acc)
        members.append({"step": step, "epoch": info.get("epoch"), "val_accuracy": val_acc,
                        "test_accuracy_pct": 100 * m, "test_ci95_pct": 100 * c})
        logits_sum = logits if logits_sum is None else logits_sum + logits
        if rank == 0:
            per = task_metrics.evaluate_params(setup, cfg, mp, tasks, mesh)["accuracy"]
            ps_mean, ps_ci = mean_ci95(per) if per.shape[0] > 1 else (per.mean(0), 0 * per[0])
            best = {**members[0], "per_step_accuracy_pct": [100 * float(v) for v in ps_mean],
                    "per_step_ci95_pct": [100 * float(v) for v in ps_ci],
                    "per_task_accuracy_pct": _per_task(task_acc)}
            suffix = "" if cfg["num_seeds"] == 1 else f"_seed{cfg['seed'] + seed_index}"
            plots.plot_inner_lrs(jax.device_get(mp["inner_lrs"]),
                                 workdir / f"inner_lrs_best{suffix}.png",
                                 title=f"{cfg['name']}{suffix}: inner learning rates "
                                       f"(best checkpoint)")
    ens_acc = ((logits_sum / len(members)).argmax(-1) == parallel.host_array(yq)).mean(axis=1)
    m, c = _ci(ens_acc)
    return {"seed": cfg["seed"] + seed_index, "best": best,
            "ensemble": {"size": len(members), "steps": [mm["step"] for mm in members],
                         "test_accuracy_pct": 100 * m, "test_ci95_pct": 100 * c,
                         "per_task_accuracy_pct": _per_task(ens_acc)},
            "members": members}


def run_evaluation(workdir: str | pathlib.Path, *, data_dir: str | None = None,
                   images: tuple[np.ndarray, dict] | None = None, num_tasks: int | None = None,
                   ensemble_size: int | None = None,
                   compare_siblings: bool = True) -> dict[str, Any]:
    """Evaluates a workdir; see the module docstring.

    A population run (``num_seeds`` > 1) is evaluated per seed (its checkpoints are ranked
    by the seeds' mean validation accuracy, so every seed uses the same steps); the
    results then hold ``seeds`` (one entry per seed) and ``over_seeds`` (mean and standard
    deviation over seeds, as the MAML++ paper reports), and ``best``/``ensemble`` are the
    seed means.
    """
    workdir = pathlib.Path(workdir)
    updates = {} if num_tasks is None else {"num_test_tasks": int(num_tasks)}
    with open_trained_workdir(workdir, images=images, data_dir=data_dir,
                              config_updates=updates) as run:
        cfg = run.cfg
        ens = int(ensemble_size or cfg["ensemble_size"])
        tasks = datasets.fixed_eval_tasks(
            jax.device_put(datasets.select_classes(run.images, run.splits["test"])), cfg, "test")
        if run.mesh is not None:  # once, not for every checkpoint and seed
            tasks = parallel.replicate(tasks, run.mesh)
        seeds = [_evaluate_seed(run, ens, tasks, i) for i in range(cfg["num_seeds"])]
    results = {
        "config_name": cfg["name"], "num_test_tasks": cfg["num_test_tasks"],
        "num_ways": cfg["num_ways"], "k_shot": cfg["k_shot"], "q_query": cfg["q_query_eval"],
        "num_inner_steps_eval": cfg["num_inner_steps_eval"],
        "paper_test_accuracy_pct": cfg.get("paper_test_accuracy"),
    }
    if len(seeds) == 1:
        results.update({k: seeds[0][k] for k in ("best", "ensemble", "members")})
    else:
        def over(kind):
            acc = np.array([s[kind]["test_accuracy_pct"] for s in seeds])
            return {"mean_pct": float(acc.mean()), "std_pct": float(acc.std(ddof=1)),
                    "per_seed_pct": [float(a) for a in acc]}
        results["seeds"] = seeds
        results["over_seeds"] = {"best": over("best"), "ensemble": over("ensemble")}
        per_step = np.array([s["best"]["per_step_accuracy_pct"] for s in seeds])
        results["best"] = {"step": seeds[0]["best"]["step"],
                           "test_accuracy_pct": results["over_seeds"]["best"]["mean_pct"],
                           "test_ci95_pct": float(np.mean([s["best"]["test_ci95_pct"]
                                                           for s in seeds])),
                           "per_step_accuracy_pct": [float(v) for v in per_step.mean(0)],
                           # The spread of the seeds' means: not an interval over tasks.
                           "per_step_seed_std_pct": [float(v) for v in per_step.std(0, ddof=1)]}
        results["ensemble"] = {"size": seeds[0]["ensemble"]["size"],
                               "test_accuracy_pct": results["over_seeds"]["ensemble"]["mean_pct"],
                               "test_ci95_pct": float(np.mean([s["ensemble"]["test_ci95_pct"]
                                                               for s in seeds]))}
    checkpoints.write_json(workdir / "test_results.json", results)
    curves = {cfg["name"]: plots.per_step_curve(results["best"])}
    if len(seeds) > 1:
        curves = {f"{cfg['name']} seed {s['seed']}": plots.per_step_curve(s["best"])
                  for s in seeds}
    plots.plot_per_step_accuracy(curves, workdir / "per_step_accuracy.png")
    if compare_siblings and len(seeds) == 1:
        from experiments.compare import compare_runs
        siblings = sorted(p.parent for p in workdir.resolve().parent.glob("*/test_results.json"))
        if len(siblings) > 1:
            compare_runs(siblings, workdir.resolve().parent / "compare_per_step_accuracy.png",
                         quiet=True)
    return results


def format_table(results: dict[str, Any]) -> str:
    """The printed summary of ``run_evaluation``'s results.

    Example:
        >>> best = {"step": 500, "test_accuracy_pct": 98.5, "test_ci95_pct": 0.25,
        ...         "per_step_accuracy_pct": [20.0, 98.5]}
        >>> print(format_table({"config_name": "omniglot_5w1s_mamlpp", "num_ways": 5,
        ...                     "k_shot": 1, "num_test_tasks": 600, "num_inner_steps_eval": 1,
        ...                     "best": best, "ensemble": {"size": 5, "test_accuracy_pct": 98.75,
        ...                                                "test_ci95_pct": 0.25}}))
        ... # doctest: +NORMALIZE_WHITESPACE
        omniglot_5w1s_mamlpp: 5-way 1-shot, 600 test tasks, 1 inner steps
        model                             test accuracy (%)
        ---------------------------------------------------
        best checkpoint (step 500)           98.50 +- 0.25
        top-5 ensemble                       98.75 +- 0.25
        per-step accuracy (best): 20.0 98.5
    """
    b, e = results["best"], results["ensemble"]
    rows = [(f"best checkpoint (step {b['step']})", b["test_accuracy_pct"], b["test_ci95_pct"]),
            (f"top-{e['size']} ensemble", e["test_accuracy_pct"], e["test_ci95_pct"])]
    lines = [f"{results['config_name']}: {results['num_ways']}-way {results['k_shot']}-shot, "
             f"{results['num_test_tasks']} test tasks, "
             f"{results['num_inner_steps_eval']} inner steps",
             f"{'model':<30} {'test accuracy (%)':>20}",
             "-" * 51]
    for name, acc, ci in rows:
        lines.append(f"{name:<30} {acc:>11.2f} +- {ci:<5.2f}")
    over = results.get("over_seeds")
    if over:
        lines.insert(3, "(population: best / ensemble below are means over the seeds)")
        for kind in ("best", "ensemble"):
            o = over[kind]
            lines.append(f"{kind + ' over seeds':<30} {o['mean_pct']:>11.2f} "
                         f"+- {o['std_pct']:<5.2f} "
                         f"(std over {len(o['per_seed_pct'])} seeds: "
                         + ", ".join(f"{v:.2f}" for v in o["per_seed_pct"]) + ")")
    paper = results.get("paper_test_accuracy_pct")
    if paper:
        lines.append(f"{'paper':<30} {paper[0]:>11.2f} +- {paper[1]:<5.2f}")
    lines.append("per-step accuracy (best): " +
                 " ".join(f"{v:.1f}" for v in b["per_step_accuracy_pct"]))
    return "\n".join(lines)


def define_flags() -> flags.FlagValues:
    """The script's flags on a fresh ``FlagValues`` (see ``experiments.flag_parsing``)."""
    fv = flags.FlagValues()
    flags.DEFINE_string("workdir", None, "a training workdir (holds config.json and "
                        "checkpoints/)", flag_values=fv)
    flags.DEFINE_string("data-dir", None, "the dataset (default: $MAML_JAX_DATA_DIR, then "
                        "the user cache; Omniglot only)", flag_values=fv)
    flags.DEFINE_integer("num-tasks", None, "override num_test_tasks", lower_bound=1,
                         flag_values=fv)
    flags.DEFINE_integer("ensemble-size", None, "override ensemble_size", lower_bound=1,
                         flag_values=fv)
    flags.mark_flag_as_required("workdir", flag_values=fv)
    return fv


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (``python -m experiments.evaluate``, ``maml-jax-evaluate``).

    The config is the workdir's ``config.json`` (what the run was trained with).

    Args:
        argv: The arguments without the program name; None reads ``sys.argv``.

    Returns:
        The exit status (``flag_parsing.run_main``): 0, or 2 for a flag, config or data
        error.

    Example (a directory that training did not write):
        >>> main(["--workdir=runs/no_such_run"])
        2
    """
    argv = flag_parsing.program_argv("python -m experiments.evaluate", argv)
    return flag_parsing.run_main(functools.partial(_main, argv))


def _main(argv: list[str]) -> int:
    fv = define_flags()
    rest = flag_parsing.parse_or_help(fv, argv, __doc__)
    if rest is None:
        return 0
    flag_parsing.check_no_arguments(rest)
    results = run_evaluation(fv["workdir"].value, data_dir=fv["data-dir"].value,
                             num_tasks=fv["num-tasks"].value,
                             ensemble_size=fv["ensemble-size"].value)
    print(format_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
