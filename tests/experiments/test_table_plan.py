"""``experiments.table_plan``: a call's plan from measured rates, and the rates' records.

Every recorded rate is checked against the result file it names (the number is there);
the plan is checked against the arithmetic it states (whole pieces while they fit, then
the steps to the last epoch end that fits); the choice between a population and one
program per seed follows the measured seed-steps/s.
"""

from __future__ import annotations

import json
import math
import pathlib
import re

import pytest

from experiments import table_plan
from experiments.table_plan import Pending, Rates

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _numbers(tree):
    if isinstance(tree, dict):
        for v in tree.values():
            yield from _numbers(v)
    elif isinstance(tree, list):
        for v in tree:
            yield from _numbers(v)
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
        yield float(tree)


def test_every_recorded_rate_is_in_the_file_it_names():
    rates = table_plan.load_rates()
    assert rates.records
    for r in rates.records:
        path = ROOT / r["source"].split(" ")[0]
        found = list(_numbers(json.loads(path.read_text())))
        for key in ("seed_steps_per_s", "compile_s"):
            assert any(math.isclose(v, r[key], rel_tol=1e-3) for v in found), (r, key)
    for device, loop in rates.training_loop.items():
        for path in re.findall(r"(?:benchmarks|experiments)/results/[\w./-]+", loop["source"]):
            assert (ROOT / path.rstrip(".,)")).exists(), (device, path)


def _rates(one=None, three=None):
    records = []
    for seeds, rate in ((1, one), (3, three)):
        if rate is not None:
            records.append({"device": "GPU", "cell": "c", "seeds": seeds, "conv_impl": "x",
                            "seed_steps_per_s": rate, "compile_s": 10.0})
    loop = {"GPU": {"rate_factor": 1.0, "startup_s": 5.0, "eval_s_per_seed": 10.0,
                    "call_startup_s": 20.0}}
    return Rates(tuple(records), loop)


@pytest.mark.parametrize("one, three, layout", [
    (100.0, 150.0, "population"),   # 3 seeds in one program: 150 seed-steps/s
    (100.0, 90.0, "per_seed"),
    (100.0, None, "per_seed"),      # only one seed per program measured
    (None, 90.0, "population"),
    (None, None, "population"),     # nothing measured: as before
])
def test_seeds_per_program_follow_the_measured_rates(one, three, layout):
    assert table_plan.choose_seeds_per_program(_rates(one, three), "GPU", "c", 3, "x")[0] \
        == layout


def test_the_plan_finishes_what_fits_then_the_longest_chunk():
    rates = _rates(one=100.0)
    work = [Pending(f"run/seed{k}", "c", 1, "x", done, 10_000, 500, phases=2)
            for k, done in enumerate((4_000, 0, 0))]
    # Start-up 20 s; seed 0: 5 + 10 (second phase) + 6000 / 100 + 10 = 85 s; seed 1 the
    # same with 10,000 steps: 125 s; seed 2 gets what is left (300 - 230 = 70 s, less its
    # 25 s fixed: 4,500 steps, 4,500 at the last epoch end).
    plan = table_plan.plan_call(rates, "GPU", work, 300)
    assert [(s.name, s.steps, s.finishes) for s in plan] == [
        (table_plan.START_UP, 0, True), ("run/seed0", 6000, True), ("run/seed1", 10000, True),
        ("run/seed2", 4500, False)]
    assert [round(s.seconds) for s in plan] == [20, 85, 125, 70]
    assert table_plan.plan_call(rates, "GPU", work, 300 - 1)[-1].steps == 4000   # epoch end
    # A program without a measured rate ends the plan: the call runs on its budget alone.
    odd = [Pending("other", "c", 3, "x", 0, 10_000, 500)]
    last = table_plan.plan_call(rates, "GPU", odd, 300)[-1]
    assert last.steps == 0 and "no measured rate" in last.note
    assert "no measured rate" in table_plan.format_plan(
        table_plan.plan_call(rates, "CPU", work, 300), 300)


def test_the_command_line_plans_the_table_from_a_saved_state(tmp_path, capsys):
    """A seed saved at step 40,000 by an earlier window is planned from there: it
    finishes in a 9-minute call, and the next seed gets the epochs that fit after it."""
    seed0 = tmp_path / "omniglot_5w1s_mamlpp" / "seed0"
    seed0.mkdir(parents=True)
    (seed0 / "config.json").write_text("{}")
    (seed0 / "checkpoint.json").write_text(json.dumps({"step": 40_000}))
    assert table_plan.main(["--device", "NVIDIA H200", "--minutes", "9", "--cells",
                            "omniglot_5w1s", "--methods", "mamlpp",
                            "--state-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "omniglot_5w1s_mamlpp/seed0: 10000 steps, finishes" in out
    assert "omniglot_5w1s_mamlpp/seed1: 39000 steps, resumable chunk" in out
