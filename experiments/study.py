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

import functools
import json
import pathlib
import sys
import time
from typing import Any

import jax
from absl import flags

import maml_jax as mj
from experiments import flag_parsing
from experiments.study_report import make_plots, study_markdown
from experiments.study_runs import RunFailed, evaluate_run
from experiments.study_statistics import OVERSHOOT_MARGIN, summarize

__all__ = ["run_study", "define_flags", "main"]


def run_study(workdirs: list[str | pathlib.Path], out: str | pathlib.Path, *,
              margin: float = OVERSHOOT_MARGIN, images=None, data_dir=None,
              command: str = "") -> dict[str, Any]:
    """Evaluates every run, writes study.json / study.md / plots into ``out``; returns the JSON.

    Args:
        workdirs: Run directories (``study_runs.evaluate_run``); one that cannot be
            evaluated is listed under ``failed`` with its reason.
        out: The output directory (created).
        margin: The relative rise that counts as overshooting (``study_statistics``).
        images: Omniglot runs' ``(images, splits)``, already loaded.
        data_dir: Omniglot runs' data.
        command: The command line, recorded in the outputs.
    """
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
    (out / "study.md").write_text(study_markdown(result))
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
    """``python -m experiments.study RUN_DIR ... --out=DIR``; 0 if any run was evaluated,
    1 if none, 2 for bad flags (``flag_parsing.run_main``).

    Example (no run directory named):
        >>> main(["--out=runs/study"])
        2
    """
    full = flag_parsing.program_argv("python -m experiments.study", argv)
    return flag_parsing.run_main(functools.partial(_main, full))


def _main(full: list[str]) -> int:
    fv = define_flags()
    rest = flag_parsing.parse_or_help(fv, full, __doc__)
    if rest is None:
        return 0
    workdirs = flag_parsing.run_dirs(rest)
    out = fv["out"].value
    res = run_study(workdirs, out, margin=fv["margin"].value, data_dir=fv["data-dir"].value,
                    command="python -m experiments.study " + " ".join(full[1:]))
    print((pathlib.Path(out) / "study.md").read_text())
    return 0 if res["groups"] else 1


if __name__ == "__main__":
    sys.exit(main())
