"""Side-by-side test results of evaluated runs (e.g. MAML vs MAML++).

Usage::

    python -m experiments.compare runs/omniglot_5w1s_maml runs/omniglot_5w1s_mamlpp \\
        [--out=runs/compare_per_step_accuracy.png]

Each directory must hold the ``test_results.json`` written by ``experiments.evaluate``.
Plots the query accuracy after each inner step of every run's best checkpoint (mean +- 95%
CI over the test tasks for one seed; mean +- std over the seeds for a population, as the
legend says) and prints a table.
"""

from __future__ import annotations

import functools
import json
import pathlib
import sys

from absl import flags

from experiments import flag_parsing, plots

__all__ = ["compare_runs", "define_flags", "main"]


def compare_runs(dirs, out, quiet: bool = False) -> str:
    """Plots the runs' per-step test accuracy into ``out`` and returns (and, unless
    ``quiet``, prints) their table; ``FileNotFoundError`` names a run without results."""
    curves, lines = {}, [f"{'run':<34} {'best (%)':>16} {'ensemble (%)':>16} {'paper (%)':>14}"]
    for run_dir in dirs:
        d = pathlib.Path(run_dir)
        path = d / "test_results.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: run python -m experiments.evaluate "
                                    f"--workdir {d} first")
        r = json.loads(path.read_text())
        label = f"{d.name}"
        curves[label] = plots.per_step_curve(r["best"])
        paper = r.get("paper_test_accuracy_pct")
        lines.append(f"{label:<34} {r['best']['test_accuracy_pct']:>8.2f} "
                     f"+- {r['best']['test_ci95_pct']:<5.2f}"
                     f" {r['ensemble']['test_accuracy_pct']:>8.2f} "
                     f"+- {r['ensemble']['test_ci95_pct']:<5.2f}"
                     + (f" {paper[0]:>7.2f} +- {paper[1]:<4.2f}" if paper else ""))
    plots.plot_per_step_accuracy(curves, out)
    lines.append("+-: 95% interval over the test tasks (a population of seeds: the mean of its "
                 "seeds' intervals; its std over seeds is in test_results.json, over_seeds)")
    table = "\n".join(lines)
    if not quiet:
        print(table)
        print(f"plot: {out}")
    return table


def define_flags() -> flags.FlagValues:
    """The script's flags on a fresh ``FlagValues``; the run directories are positional."""
    fv = flags.FlagValues()
    flags.DEFINE_string("out", None, "PNG path (default: <parent of the first "
                        "run>/compare_per_step_accuracy.png)", flag_values=fv)
    return fv


def main(argv: list[str] | None = None) -> int:
    """``python -m experiments.compare RUN_DIR ... [--out=PNG]``; 2 if a run lacks results
    (``flag_parsing.run_main``).

    Example (a directory that ``experiments.evaluate`` did not write to):
        >>> main(["runs/no_such_run"])
        2
    """
    full = flag_parsing.program_argv("python -m experiments.compare", argv)
    # A run without test_results.json is bad input here, not a bug: one line and status 2.
    return flag_parsing.run_main(functools.partial(_main, full),
                                 usage_errors=(FileNotFoundError,))


def _main(full: list[str]) -> int:
    fv = define_flags()
    rest = flag_parsing.parse_or_help(fv, full, __doc__)
    if rest is None:
        return 0
    workdirs = flag_parsing.run_dirs(rest)
    out = fv["out"].value or str(pathlib.Path(workdirs[0]).resolve().parent /
                                 "compare_per_step_accuracy.png")
    compare_runs(workdirs, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
