"""The claims study (``experiments/study.py``, ``study_runs``, ``study_report``): a tiny
sinusoid grid trained, resumed (finished cells skipped) and studied end to end, with a
failing cell reported as failed while the others are studied. (The statistics:
``test_study_statistics.py``; the grids themselves: ``test_study_grid.py``.)
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from experiments import study, study_grid, study_runs
from experiments.config_lib import sinusoid_config

# -- the grid and the study, end to end ----------------------------------------------------

def _tiny_grid():
    tiny = dict(num_epochs=2, iterations_per_epoch=20, meta_batch_size=4, steps_per_call=10,
                sinusoid_hidden=(8, 8), num_inner_steps=2, k_shot=5, q_query=5,
                sinusoid_eval_shots=(5,))
    configs = {
        "MAML_K5": sinusoid_config(name="MAML", **tiny),
        "MAML++_K5": sinusoid_config(name="MAML++", msl=True, msl_epochs=2,
                                     lr_granularity="layer_step", learn_inner_lrs=True,
                                     rate_update="reference_0.1x", **tiny),
    }
    # A rate this large sends the inner loop to inf/NaN: the cell must fail cleanly.
    diverges = {"Diverges_K5": sinusoid_config(name="Diverges", inner_lr=1e12, **tiny)}
    return (study_grid.StudyGrid(configs=configs, seeds=(0, 1), snapshots=2),
            study_grid.StudyGrid(configs=diverges, seeds=(0,)))


def test_sinusoid_grid_and_study_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setattr(study_runs, "SINUSOID_TEST_TASKS", 40)
    grid, failing = _tiny_grid()
    todo = study_grid.cells(grid) + study_grid.cells(failing)
    assert [n for n, _ in todo] == ["MAML_K5_s0", "MAML_K5_s1", "MAML++_K5_s0", "MAML++_K5_s1",
                                    "Diverges_K5_s0"]
    statuses = {n: study_grid.train_cell(cfg, tmp_path / n, snapshots=grid.snapshots)
                for n, cfg in todo}
    assert statuses == {**{n: "trained" for n, _ in todo[:4]}, "Diverges_K5_s0": "failed"}
    failed = json.loads((tmp_path / "Diverges_K5_s0" / "failed.json").read_text())
    assert "non-finite" in failed["error"]
    # Resumable: finished cells are skipped, and so are failed ones unless asked.
    assert study_grid.train_cell(todo[0][1], tmp_path / todo[0][0]) == "skipped"
    assert study_grid.train_cell(todo[4][1], tmp_path / todo[4][0]) == "skipped (failed before)"
    assert study_grid.train_cell(todo[4][1], tmp_path / todo[4][0], retry_failed=True) == "failed"

    out = tmp_path / "study"
    res = study.run_study([tmp_path / n for n, _ in todo], out, command="test")
    assert sorted(res["groups"]) == ["K=5/MAML", "K=5/MAML++"]
    assert [f["workdir"].rsplit("/", 1)[-1] for f in res["failed"]] == ["Diverges_K5_s0"]
    g = res["groups"]["K=5/MAML++"]
    assert g["seeds"] == [0, 1] and len(g["per_seed"]) == 2
    assert g["seed_std_final_mean"] == pytest.approx(
        np.std([s["final_mean"] for s in g["per_seed"]], ddof=1))
    p = g["pooled"]
    assert p["num_tasks"] == 80 and p["trained_steps"] == 2 and p["evaluated_steps"] == 4
    assert len(p["mean"]) == 5
    # The pooled statistic is the statistic of the concatenated per-seed losses.
    runs = [study_runs.evaluate_run(tmp_path / f"MAML++_K5_s{s}") for s in (0, 1)]
    both = np.concatenate([r.losses for r in runs])
    assert p["final_p90"] == pytest.approx(np.percentile(both[:, 2], 90))
    # Seeds differ; the same seed evaluates identically (the test tasks are fixed).
    assert not np.allclose(runs[0].losses, runs[1].losses)
    np.testing.assert_array_equal(runs[0].losses,
                                  study_runs.evaluate_run(tmp_path / "MAML++_K5_s0").losses)
    assert sorted(runs[0].inner_lr_snapshots) == [0, 20, 40]

    md = (out / "study.md").read_text()
    assert "| K=5 | MAML++ | 2 |" in md and "Diverges_K5_s0" in md and "non-finite" in md
    for name in res["plots"]:
        assert (out / name).stat().st_size > 1000, name
    assert {"trajectories_K5.png", "final_loss_hist_K5.png", "msl_weights.png",
            "inner_lrs_MAML++_K5.png".replace("+", "p")} <= set(res["plots"])
