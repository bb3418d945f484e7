"""The claims study (``experiments/study.py``).

Statistics against hand-computed values on tiny trajectories; a tiny sinusoid grid trained,
resumed (finished cells skipped) and studied end to end, with a failing cell reported as
failed while the others are studied. (The grids themselves: ``test_study_grid.py``.)
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from experiments import sinusoid, study, study_grid

# -- statistics --------------------------------------------------------------------------

LOSSES = np.array([
    [1.0, 0.5, 0.52, 0.3],   # rises 4 % at t=1 (< 5 % margin): no overshoot
    [1.0, 0.5, 0.60, 0.7],   # rises 20 % at t=1, 16.7 % at t=2
    [2.0, 1.0, 0.50, 0.25],  # monotone
    [1.0, 2.0, 1.00, 0.5],   # doubles at t=0
])


def test_overshoot_against_hand_computed_values():
    rises = study.overshoot(LOSSES, 0.05)
    np.testing.assert_array_equal(rises, [[False, False, False],
                                          [False, True, True],
                                          [False, False, False],
                                          [True, False, False]])
    # margin 0: any rise counts (row 0 now overshoots at t=1); margin 1: only a doubling+
    assert study.overshoot(LOSSES, 0.0)[0].tolist() == [False, True, False]
    assert not study.overshoot(LOSSES, 1.0).any()
    with pytest.raises(ValueError, match="tasks, steps"):
        study.overshoot(np.ones(3))


def test_trajectory_statistics_against_hand_computed_values():
    s = study.trajectory_statistics(LOSSES, trained_steps=2, margin=0.05)
    final = np.array([0.52, 0.60, 0.50, 1.00])          # after N = 2 steps
    assert s["final_mean"] == pytest.approx(0.655)
    assert s["final_std"] == pytest.approx(np.sqrt(np.mean((final - 0.655) ** 2)))
    # linear-interpolation percentiles of the sorted [0.5, 0.52, 0.6, 1.0]:
    # p90 at rank 0.9 * 3 = 2.7 -> 0.6 + 0.7 * 0.4; p99 at rank 2.97 -> 0.6 + 0.97 * 0.4
    assert s["final_p90"] == pytest.approx(0.88)
    assert s["final_p99"] == pytest.approx(0.988)
    assert s["overshoot_any_trained"] == pytest.approx(0.5)   # rows 1 (t=1) and 3 (t=0)
    assert s["overshoot_any"] == pytest.approx(0.5)
    assert s["overshoot_per_step"] == pytest.approx([0.25, 0.25, 0.25])
    # mean over tasks and over steps 0..N
    assert s["trajectory_mean"] == pytest.approx(np.mean(LOSSES[:, :3]))
    assert s["last_mean"] == pytest.approx(np.mean([0.3, 0.7, 0.25, 0.5]))
    assert s["mean"] == pytest.approx(LOSSES.mean(0))
    assert s["nonfinite_tasks"] == 0
    # only the rise at t=0 is inside N = 1
    s1 = study.trajectory_statistics(LOSSES, trained_steps=1)
    assert s1["overshoot_any_trained"] == pytest.approx(0.25)
    assert s1["overshoot_any"] == pytest.approx(0.5)
    acc = np.tile([[0.2, 0.6, 0.8, 0.9]], (4, 1))
    assert study.trajectory_statistics(LOSSES, 2, accuracy=acc)["final_accuracy"] == \
        pytest.approx(0.8)
    bad = LOSSES.copy()
    bad[2, 3] = np.inf
    assert study.trajectory_statistics(bad, 2)["nonfinite_tasks"] == 1
    with pytest.raises(ValueError, match="trained_steps"):
        study.trajectory_statistics(LOSSES, 4)


def test_seed_spread():
    assert study.seed_spread([0.1]) is None
    assert study.seed_spread([1.0, 2.0, 3.0]) == pytest.approx(1.0)   # ddof=1


# -- the grid and the study, end to end ----------------------------------------------------

def _tiny_grid():
    fixed = dict(inner_lr=0.01, granularity="scalar", learn_inner_lrs=False)
    methods = (
        sinusoid.MethodConfig(name="MAML", num_inner_steps=2, msl=False, **fixed),
        sinusoid.MethodConfig(name="MAML++", num_inner_steps=2, msl=True, msl_epochs=2,
                              inner_lr=0.01, granularity="layer_step", learn_inner_lrs=True,
                              inner_lr_scale=0.1),
    )
    base = sinusoid.SinusoidConfig(methods=(), iterations=40, iterations_per_epoch=20,
                                   meta_batch_size=4, steps_per_call=10, hidden=(8, 8))
    # A rate this large sends the inner loop to inf/NaN: the cell must fail cleanly.
    diverges = sinusoid.MethodConfig(name="Diverges", num_inner_steps=2, msl=False,
                                     inner_lr=1e12, granularity="scalar",
                                     learn_inner_lrs=False)
    return (study_grid.SinusoidGrid(base=base, methods=methods, shots=(5,), seeds=(0, 1),
                                    snapshots=2),
            study_grid.SinusoidGrid(base=base, methods=(diverges,), shots=(5,), seeds=(0,)))


def test_sinusoid_grid_and_study_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setattr(study, "SINUSOID_TEST_TASKS", 40)
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
    runs = [study.evaluate_run(tmp_path / f"MAML++_K5_s{s}") for s in (0, 1)]
    both = np.concatenate([r.losses for r in runs])
    assert p["final_p90"] == pytest.approx(np.percentile(both[:, 2], 90))
    # Seeds differ; the same seed evaluates identically (the test tasks are fixed).
    assert not np.allclose(runs[0].losses, runs[1].losses)
    np.testing.assert_array_equal(runs[0].losses,
                                  study.evaluate_run(tmp_path / "MAML++_K5_s0").losses)
    assert sorted(runs[0].inner_lr_snapshots) == [0, 20, 40]

    md = (out / "study.md").read_text()
    assert "| K=5 | MAML++ | 2 |" in md and "Diverges_K5_s0" in md and "non-finite" in md
    for name in res["plots"]:
        assert (out / name).stat().st_size > 1000, name
    assert {"trajectories_K5.png", "final_loss_hist_K5.png", "msl_weights.png",
            "inner_lrs_MAML++_K5.png".replace("+", "p")} <= set(res["plots"])
