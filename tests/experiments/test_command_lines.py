"""Every flag of every experiment script reaches the code it controls.

A flag that is parsed and then dropped is a silent wrong result (``--num-seeds 3`` that
trains one seed). For each script's ``main``, the functions it hands its work to are
replaced by recorders; the script runs once with its base arguments and once per flag with
that flag changed, and what the recorders received must differ. The flags come from the
script's own ``define_flags``, so a new flag without an entry in ``FLAG_VALUES`` fails.
Nothing is trained or compiled.
"""

from __future__ import annotations

import json
import pathlib
import shutil

import pytest

from experiments import (
    compare,
    evaluate,
    reproduce,
    sinusoid,
    sinusoid_outliers,
    study,
    study_grid,
    train,
)

ROOT = pathlib.Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "experiments" / "configs"


class Recorder:
    """Stands in for a function: records each call's arguments, returns ``result(...)``."""

    def __init__(self, calls: list, name: str, result=None):
        self.calls, self.name, self.result = calls, name, result

    def __call__(self, *args, **kwargs):
        self.calls.append((self.name, repr(args), repr(sorted(kwargs.items()))))
        return self.result(*args, **kwargs) if callable(self.result) else self.result


def _write_study_md(out_arg_index=1, key="out"):
    def write(*args, **kwargs):
        out = pathlib.Path(kwargs.get(key) or args[out_arg_index])
        out.mkdir(parents=True, exist_ok=True)
        (out / "study.md").write_text("study")
        return {"groups": {"a": {}}}
    return write


def _patch_train(mp, calls, tmp):
    mp.setattr(train, "train_and_evaluate", Recorder(calls, "train", {"finished": True}))
    mp.setattr(train, "init_distributed", Recorder(calls, "distributed"))
    # The distributed flags take their defaults from the environment: set all three there,
    # so that each flag alone changes a complete setting.
    mp.setenv("JAX_COORDINATOR_ADDRESS", "localhost:1")
    mp.setenv("JAX_NUM_PROCESSES", "2")
    mp.setenv("JAX_PROCESS_ID", "0")


def _patch_evaluate(mp, calls, tmp):
    mp.setattr(evaluate, "run_evaluation", Recorder(calls, "evaluate", {}))
    mp.setattr(evaluate, "format_table", Recorder(calls, "table", ""))


def _patch_study(mp, calls, tmp):
    mp.setattr(study, "run_study", Recorder(calls, "study", _write_study_md()))


def _patch_study_grid(mp, calls, tmp):
    mp.setattr(study_grid, "train_cell", Recorder(calls, "cell", "trained"))
    mp.setattr(study, "run_study", Recorder(calls, "study", _write_study_md()))


def _patch_compare(mp, calls, tmp):
    mp.setattr(compare, "compare_runs", Recorder(calls, "compare", ""))


def _patch_sinusoid(mp, calls, tmp):
    mp.setattr(sinusoid, "train_sinusoid", Recorder(
        calls, "train", lambda *a, **k: sinusoid.SinusoidRun({"inner_lrs": {}}, [], 0.0)))
    mp.setattr(sinusoid, "evaluate_sinusoid", Recorder(calls, "evaluate", {}))
    mp.setattr(sinusoid, "results_table", Recorder(calls, "table", ""))
    mp.setattr(sinusoid, "make_plots", Recorder(calls, "plots", []))


def _patch_outliers(mp, calls, tmp):
    mp.setattr(sinusoid, "train_sinusoid", Recorder(
        calls, "train", lambda *a, **k: sinusoid.SinusoidRun({"w": [0.0]}, [], 0.0)))
    mp.setattr(sinusoid_outliers, "analyse", Recorder(calls, "analyse", {}))
    mp.setattr(sinusoid_outliers, "to_markdown", Recorder(calls, "markdown", ""))


def _patch_reproduce(mp, calls, tmp):
    mp.setattr(reproduce, "run_table", Recorder(calls, "table", {}))
    mp.setattr(reproduce, "format_table", Recorder(calls, "markdown", ""))
    # A second table config for --table.
    (tmp / "table.py").write_text("from experiments.reproduce import PaperTable\n"
                                  "def get_config(arg=None):\n"
                                  "    return PaperTable(order=('omniglot_5w1s_maml',))\n")


SINUSOID = f"--config={CONFIGS / 'sinusoid_paper.py'}:smoke"
# script -> (module, how to patch it, base arguments ({tmp} = a fresh directory)).
SCRIPTS = {
    "train": (train, _patch_train,
              [f"--config={CONFIGS / 'omniglot_5w1s_mamlpp.py'}:smoke", "--workdir={tmp}/w"]),
    "evaluate": (evaluate, _patch_evaluate, ["--workdir={tmp}/w"]),
    "study": (study, _patch_study, ["{tmp}/run", "--out={tmp}/out"]),
    "study_grid": (study_grid, _patch_study_grid,
                   [f"--grid={CONFIGS / 'study_sinusoid.py'}", "--root={tmp}/root"]),
    "compare": (compare, _patch_compare, ["{tmp}/a", "{tmp}/b"]),
    "reproduce": (reproduce, _patch_reproduce, ["--root={tmp}/root"]),
    "sinusoid": (sinusoid, _patch_sinusoid, [SINUSOID, "--workdir={tmp}/w"]),
    "sinusoid_outliers": (sinusoid_outliers, _patch_outliers, [SINUSOID, "--workdir={tmp}/w"]),
}
# script -> flag -> the arguments that change it from the base.
FLAG_VALUES = {
    "train": {"config": [f"--config={CONFIGS / 'omniglot_5w1s_maml.py'}:smoke"],
              "workdir": ["--workdir={tmp}/other"], "data-dir": ["--data-dir={tmp}/d"],
              "resume": ["--resume"], "max-minutes": ["--max-minutes=5"],
              "stop-after": ["--stop-after=2"], "no-progress": ["--no-progress"],
              "num-seeds": ["--num-seeds=3"],
              "coordinator-address": ["--coordinator-address=localhost:2"],
              "num-processes": ["--num-processes=3"], "process-id": ["--process-id=1"]},
    "evaluate": {"workdir": ["--workdir={tmp}/other"], "data-dir": ["--data-dir={tmp}/d"],
                 "num-tasks": ["--num-tasks=7"], "ensemble-size": ["--ensemble-size=2"]},
    "study": {"out": ["--out={tmp}/other"], "margin": ["--margin=0.5"],
              "data-dir": ["--data-dir={tmp}/d"]},
    "study_grid": {"grid": [f"--grid={CONFIGS / 'study_omniglot_ablation_cpu.py'}"],
                   "root": ["--root={tmp}/other"], "smoke": ["--smoke"],
                   "only": ["--only=MAML_K5_*"], "no-study": ["--no-study"],
                   "retry-failed": ["--retry-failed"], "data-dir": ["--data-dir={tmp}/d"],
                   "progress": ["--progress"]},
    "compare": {"out": ["--out={tmp}/c.png"]},
    "reproduce": {"table": ["--table={tmp}/table.py"], "root": ["--root={tmp}/other"],
                  "cells": ["--cells=omniglot_5w1s"], "methods": ["--methods=maml"],
                  "seeds": ["--seeds=2"], "data-dir": ["--data-dir={tmp}/d"],
                  "max-minutes": ["--max-minutes=9"], "eval-minutes": ["--eval-minutes=1"],
                  "stop-after": ["--stop-after=1"], "set": ["--set=conv_impl=patches"],
                  "smoke": ["--smoke"], "progress": ["--progress"],
                  "state-dir": ["--state-dir={tmp}/state"], "layout": ["--layout=per_seed"]},
    "sinusoid": {"config": [f"--config={CONFIGS / 'sinusoid_demo.py'}"],
                 "workdir": ["--workdir={tmp}/other"], "iterations": ["--iterations=60"],
                 "no-progress": ["--no-progress"]},
    "sinusoid_outliers": {"config": [f"--config={CONFIGS / 'sinusoid_demo.py'}"],
                          "workdir": ["--workdir={tmp}/other"], "iterations": ["--iterations=60"],
                          "top": ["--top=3"], "focus": ["--focus=MAML"]},
}


def _defined_flags(script):
    module = SCRIPTS[script][0]
    # Scripts with a --config flag read its overrides from the command line they parse.
    with_config = ("train", "sinusoid", "sinusoid_outliers")
    fv = module.define_flags(["prog"]) if script in with_config else module.define_flags()
    return sorted(fv)


def _run(script, changes, monkeypatch, tmp):
    """Runs ``main`` with the base arguments, where ``changes`` replace base arguments of
    the same flag, in an emptied ``tmp`` (the same paths for every run)."""
    module, patch, base = SCRIPTS[script]
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    base = [a.format(tmp=tmp) for a in base]
    changes = [a.format(tmp=tmp) for a in changes]
    replaced = {a.split("=")[0] for a in changes}
    argv = [a for a in base if a.split("=")[0] not in replaced] + changes
    calls = []
    with monkeypatch.context() as mp:
        mp.chdir(tmp)
        patch(mp, calls, tmp)
        status = module.main(argv)
    assert status == 0 or isinstance(status, dict), (script, argv, status)
    return calls


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_every_flag_is_listed(script):
    assert set(FLAG_VALUES[script]) == set(_defined_flags(script)), (
        f"each flag of {script} needs changed arguments in FLAG_VALUES")


@pytest.mark.parametrize("script, flag", [(s, f) for s in sorted(FLAG_VALUES)
                                          for f in sorted(FLAG_VALUES[s])])
def test_flag_reaches_the_code_it_controls(script, flag, monkeypatch, tmp_path):
    tmp = tmp_path / "run"
    base = _run(script, [], monkeypatch, tmp)
    assert base, f"{script}: the base run handed no work on"
    changed = _run(script, FLAG_VALUES[script][flag], monkeypatch, tmp)
    assert changed != base, f"{script} --{flag}: parsed, but nothing it controls changed"


def test_the_base_runs_record_what_they_hand_on(monkeypatch, tmp_path):
    """The recorders see the work itself (a changed flag is compared on these records)."""
    tmp = tmp_path / "run"
    calls = _run("train", [], monkeypatch, tmp)
    (_, args, kwargs), = [c for c in calls if c[0] == "train"]
    assert "omniglot_5w1s_mamlpp_smoke" in args and str(tmp / "w") in args
    assert "'progress', True" in kwargs
    outputs = json.dumps(calls)
    assert "localhost:1" in outputs   # the distributed settings from the environment
