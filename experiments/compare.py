"""Side-by-side test results of evaluated runs (e.g. MAML vs MAML++).

Usage::

    python -m experiments.compare runs/omniglot_5w1s_maml runs/omniglot_5w1s_mamlpp \
        [--out runs/compare_per_step_accuracy.png]

Each directory must hold the ``test_results.json`` written by ``experiments.evaluate``.
Plots the query accuracy after each inner step (mean +- 95% CI) of every run's best
checkpoint and prints a table.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

from experiments import plots


def compare_runs(dirs, out, quiet: bool = False) -> str:
    curves, lines = {}, [f"{'run':<34} {'best (%)':>16} {'ensemble (%)':>16} {'paper (%)':>14}"]
    for d in dirs:
        d = pathlib.Path(d)
        path = d / "test_results.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: run python -m experiments.evaluate "
                                    f"--workdir {d} first")
        r = json.loads(path.read_text())
        label = f"{d.name}"
        curves[label] = (r["best"]["per_step_accuracy_pct"], r["best"]["per_step_ci95_pct"])
        paper = r.get("paper_test_accuracy_pct")
        lines.append(f"{label:<34} {r['best']['test_accuracy_pct']:>8.2f} +- {r['best']['test_ci95_pct']:<5.2f}"
                     f" {r['ensemble']['test_accuracy_pct']:>8.2f} +- {r['ensemble']['test_ci95_pct']:<5.2f}"
                     + (f" {paper[0]:>7.2f} +- {paper[1]:<4.2f}" if paper else ""))
    plots.plot_per_step_accuracy(curves, out)
    table = "\n".join(lines)
    if not quiet:
        print(table)
        print(f"plot: {out}")
    return table


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.compare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("workdirs", nargs="+")
    p.add_argument("--out", default=None, help="PNG path (default: <parent of first>/compare_per_step_accuracy.png)")
    args = p.parse_args(argv)
    out = args.out or str(pathlib.Path(args.workdirs[0]).resolve().parent / "compare_per_step_accuracy.png")
    try:
        compare_runs(args.workdirs, out)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
