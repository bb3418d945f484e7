"""``experiments.sinusoid_outliers``: its helpers against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest


def test_outlier_helpers_against_hand_computed_values():
    from experiments import sinusoid_outliers as so
    rng = np.random.RandomState(0)
    for amp, phase in [(0.1, 0.0), (2.5, 1.3), (5.0, np.pi - 1e-3)]:
        x = rng.uniform(-5, 5, 100)
        a, p = so.fit_sine(x, amp * np.sin(x - phase))
        assert a == pytest.approx(amp, rel=1e-9) and p == pytest.approx(phase, abs=1e-9)
    # points -3, 1, 2 in [-5, 5]: gaps 2, 4, 1, 3 -> widest 4; covered range 2 - (-3) = 5
    assert so.support_coverage(np.array([1.0, -3.0, 2.0])) == (4.0, 5.0)


def test_an_unknown_focus_is_refused_before_training(tmp_path, capsys):
    from experiments import sinusoid_outliers
    from tests.support.repo import CONFIG_DIR
    assert sinusoid_outliers.main([f"--config={CONFIG_DIR / 'sinusoid_paper.py'}:smoke",
                                   f"--workdir={tmp_path}", "--focus=Reptile"]) == 2
    assert "--focus='Reptile' is not a method of the comparison: ['MAML', 'MAML++']" in \
        capsys.readouterr().err
    assert not list(tmp_path.iterdir())
