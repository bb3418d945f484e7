"""``experiments.reproduce``: the paper table's command, end to end at a tiny scale.

Two runs (Omniglot 5w1s and 5w5s MAML++ on synthetic glyphs) with two seeds each: a first
call stopped after one of two epochs leaves both partial, evaluated and labelled; a second
call continues both from their latest checkpoints and finishes them; a third trains and
evaluates nothing. The budget, the missing mini-ImageNet data and bad requests are
checked without training.
"""

from __future__ import annotations

import json

import pytest

from experiments import evaluate, reproduce, train
from experiments.configs import paper_table

# The smoke updates that make the Omniglot configs tiny and data-free (synthetic glyphs).
# MSL over both epochs and first order: one cheap training program per run, compiled once
# and reused by the resumed call (the table's plumbing is under test here, not the maths).
TINY = dict(data="synthetic", synthetic_num_classes=30, synthetic_counts=(20, 5, 5),
            num_filters=4, num_inner_steps=2, num_inner_steps_eval=2, msl_epochs=2,
            meta_batch_size=2, num_epochs=2, iterations_per_epoch=2, steps_per_call=2,
            num_val_tasks=8, num_test_tasks=8, eval_batch_size=0, keep_best=2,
            ensemble_size=2, first_order=True)
TABLE = reproduce.PaperTable(order=paper_table.get_config().order, seeds=3, smoke=TINY)
RUNS = ["omniglot_5w1s_mamlpp", "omniglot_5w5s_mamlpp"]


def _table(tmp_path, **kwargs):
    """The table's report and the log lines of its runs (without those of the layout
    choice and the plan, which name no run's action)."""
    logs = []
    report = reproduce.run_table(TABLE, tmp_path / "root", cells=["omniglot_5w1s",
                                                                  "omniglot_5w5s"],
                                 methods=["mamlpp"], seeds=2, smoke=True, command="test",
                                 log=logs.append, **kwargs)
    return report, [line for line in logs if not line.startswith(("layout of", "plan for"))]


@pytest.mark.slow
def test_partial_resumed_and_finished_runs(tmp_path, monkeypatch):
    report, logs = _table(tmp_path, stop_after=1)
    assert [r["run"] for r in report["rows"]] == RUNS   # the table's order
    assert all(line.split(":")[1].startswith(" trained and evaluated") for line in logs), logs
    for row in report["rows"]:
        assert row["status"] == "partial" and row["epochs_done"] == 1, row
        assert row["schedule"].startswith("1 of 2 epochs run; reduced: num_epochs=2 "
                                          "(paper 100)"), row["schedule"]
        assert row["seeds"] == 2 and len(row["best"]["per_seed_pct"]) == 2
        assert row["best"]["std_pct"] is not None
        # The table's numbers are the evaluation's, seed by seed.
        results = json.loads((tmp_path / "root" / row["run"] / "test_results.json").read_text())
        assert row["best"]["per_seed_pct"] == results["over_seeds"]["best"]["per_seed_pct"]
        # Over seeds the per-step spread is their std, stored (and drawn) as such; each
        # seed's own curve keeps its 95 % interval over the test tasks.
        assert "per_step_ci95_pct" not in results["best"]
        assert len(results["best"]["per_step_seed_std_pct"]) == 3
        assert all(len(s["best"]["per_step_ci95_pct"]) == 3 for s in results["seeds"])
        assert row["ensemble"]["per_seed_pct"] == \
            [s["ensemble"]["test_accuracy_pct"] for s in results["seeds"]]
    assert report["rows"][0]["paper_test_accuracy_pct"] == [99.47, 0.05]
    md = (tmp_path / "root" / "results" / "paper_table.md").read_text()
    assert "Smoke scale" in md and md.count("| partial |") == 2 and "99.47 ± 0.05" in md
    saved = json.loads((tmp_path / "root" / "results" / "paper_table.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(report["rows"]))

    report, logs = _table(tmp_path)   # continues both, from the latest checkpoint
    assert [r["status"] for r in report["rows"]] == ["finished", "finished"]
    for row in report["rows"]:
        calls = json.loads((tmp_path / "root" / row["run"] /
                            "reproduce_calls.json").read_text())["calls"]
        assert [c["resumed_from_step"] for c in calls] == [None, 2]
        assert [c["epochs_done"] for c in calls] == [1, 2] and row["calls"] == 2
        assert row["schedule"].startswith("2 of 2 epochs run")

    # A run killed between finishing its training and its evaluation (its last evaluation
    # is of step 2) is evaluated again, not skipped with the partial numbers.
    calls_file = tmp_path / "root" / RUNS[0] / "reproduce_calls.json"
    calls = json.loads(calls_file.read_text())
    calls["calls"][-1]["evaluated_step"] = 2
    calls_file.write_text(json.dumps(calls))
    report, logs = _table(tmp_path)
    assert "evaluated" in logs[0] and "skipped (finished)" in logs[1], logs
    assert report["rows"][0]["status"] == "finished"
    assert json.loads(calls_file.read_text())["calls"][-1]["evaluated_step"] == 4

    def nothing(*args, **kwargs):
        raise AssertionError("a finished run was trained or evaluated again")

    monkeypatch.setattr(train, "train_and_evaluate", nothing)
    monkeypatch.setattr(evaluate, "run_evaluation", nothing)
    again, logs = _table(tmp_path)
    assert all("skipped (finished)" in line for line in logs), logs
    assert again["rows"] == report["rows"]


def test_budget_too_small_to_start_trains_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(train, "train_and_evaluate", lambda *a, **k: pytest.fail("trained"))
    report, logs = _table(tmp_path, max_minutes=0.5, eval_minutes=1.0)
    assert all("not started (budget)" in line for line in logs), logs
    assert [r["status"] for r in report["rows"]] == ["not started"] * 2


def test_miniimagenet_without_data_is_reported_not_run(tmp_path):
    report = reproduce.run_table(paper_table.get_config(), tmp_path, cells=[
        "miniimagenet_5w1s"], smoke=True, data_dir=str(tmp_path / "data"), log=lambda s: None)
    assert [(r["run"], r["status"]) for r in report["rows"]] == [
        ("miniimagenet_5w1s_mamlpp", "not run: no data"),
        ("miniimagenet_5w1s_maml", "not run: no data")]
    assert "not run: no data" in (tmp_path / "results" / "paper_table.md").read_text()


@pytest.mark.parametrize("args, message", [
    (["--cells=omniglot_5w2s"], "unknown cells ['omniglot_5w2s']"),
    (["--methods=reptile"], "unknown methods ['reptile']"),
    (["--seeds=0"], "--seeds must be >= 1"),
    (["--max-minutes=0"], "--max-minutes must be positive"),
    (["--set=num_filtres=3"], "unknown config key 'num_filtres'"),
    (["--data-dir={tmp}", "--cells=omniglot_5w1s"], "omniglot"),
])
def test_bad_requests_fail_before_training(args, message, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(train, "train_and_evaluate", lambda *a, **k: pytest.fail("trained"))
    (tmp_path / "omniglot").mkdir()   # an empty Omniglot folder: no archives
    status = reproduce.main([a.format(tmp=tmp_path) for a in args]
                            + [f"--root={tmp_path / 'root'}"])
    assert status == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err, err
