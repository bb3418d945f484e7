"""The study's statistics (``experiments/study_statistics.py``) against hand-computed values
on tiny trajectories."""

from __future__ import annotations

import numpy as np
import pytest

from experiments import study_statistics

# -- statistics --------------------------------------------------------------------------

LOSSES = np.array([
    [1.0, 0.5, 0.52, 0.3],   # rises 4 % at t=1 (< 5 % margin): no overshoot
    [1.0, 0.5, 0.60, 0.7],   # rises 20 % at t=1, 16.7 % at t=2
    [2.0, 1.0, 0.50, 0.25],  # monotone
    [1.0, 2.0, 1.00, 0.5],   # doubles at t=0
])


def test_overshoot_against_hand_computed_values():
    rises = study_statistics.overshoot(LOSSES, 0.05)
    np.testing.assert_array_equal(rises, [[False, False, False],
                                          [False, True, True],
                                          [False, False, False],
                                          [True, False, False]])
    # margin 0: any rise counts (row 0 now overshoots at t=1); margin 1: only a doubling+
    assert study_statistics.overshoot(LOSSES, 0.0)[0].tolist() == [False, True, False]
    assert not study_statistics.overshoot(LOSSES, 1.0).any()
    with pytest.raises(ValueError, match="tasks, steps"):
        study_statistics.overshoot(np.ones(3))


def test_trajectory_statistics_against_hand_computed_values():
    s = study_statistics.trajectory_statistics(LOSSES, trained_steps=2, margin=0.05)
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
    s1 = study_statistics.trajectory_statistics(LOSSES, trained_steps=1)
    assert s1["overshoot_any_trained"] == pytest.approx(0.25)
    assert s1["overshoot_any"] == pytest.approx(0.5)
    acc = np.tile([[0.2, 0.6, 0.8, 0.9]], (4, 1))
    assert study_statistics.trajectory_statistics(LOSSES, 2, accuracy=acc)["final_accuracy"] == \
        pytest.approx(0.8)
    bad = LOSSES.copy()
    bad[2, 3] = np.inf
    assert study_statistics.trajectory_statistics(bad, 2)["nonfinite_tasks"] == 1
    with pytest.raises(ValueError, match="trained_steps"):
        study_statistics.trajectory_statistics(LOSSES, 4)


def test_seed_spread():
    assert study_statistics.seed_spread([0.1]) is None
    assert study_statistics.seed_spread([1.0, 2.0, 3.0]) == pytest.approx(1.0)   # ddof=1


def test_mean_ci95():
    m, ci = study_statistics.mean_ci95([1.0, 2.0, 3.0, 4.0])
    assert m == 2.5
    np.testing.assert_allclose(ci, 1.96 * np.std([1, 2, 3, 4], ddof=1) / 2)
    with pytest.raises(ValueError, match="at least 2"):
        study_statistics.mean_ci95([1.0])
