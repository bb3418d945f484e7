"""maml_jax.data.sinusoid: the sinusoid task family and its fixed evaluation tasks."""

import math

import jax
import numpy as np
import pytest

import maml_jax as mj


def test_sinusoid_tasks_follow_the_family():
    (xs, ys), (xq, yq) = mj.sample_sinusoid_tasks(jax.random.PRNGKey(0), 500, 10, 7)
    assert xs.shape == ys.shape == (500, 10, 1) and xq.shape == (500, 7, 1)
    assert float(xs.min()) >= -5 and float(xs.max()) <= 5
    amp = np.max(np.abs(np.concatenate([ys, yq], 1)), axis=(1, 2))
    assert amp.max() <= 5.0 + 1e-5 and amp.min() > 0.0
    # y = A sin(x - phase): recover A and phase of one task by least squares.
    x = np.concatenate([xs[3], xq[3]])[:, 0]
    y = np.concatenate([ys[3], yq[3]])[:, 0]
    basis = np.stack([np.sin(x), np.cos(x)], 1)
    (a, b), *_ = np.linalg.lstsq(basis, y, rcond=None)  # A cos(p) sin x - A sin(p) cos x
    amp3, phase3 = math.hypot(a, b), math.atan2(-b, a)
    assert 0.1 <= amp3 <= 5.0 and -1e-4 <= phase3 <= math.pi + 1e-4
    np.testing.assert_allclose(basis @ [a, b], y, atol=1e-4)


def test_eval_tasks_are_fixed():
    a = mj.sinusoid_eval_tasks(seed=3, num_tasks=10, k_support=5)
    b = mj.sinusoid_eval_tasks(seed=3, num_tasks=10, k_support=5)
    jax.tree.map(np.testing.assert_array_equal, a, b)
    # Pinned: the same tasks in every process and every version of this code.
    (xs, ys), (xq, yq) = a
    np.testing.assert_allclose(xs[0, :3, 0], [3.7312067, 3.4070003, 3.2654083], rtol=1e-6)
    np.testing.assert_allclose(ys[0, :3, 0], [2.1840255, 2.1292791, 2.0345778], rtol=1e-6)
    np.testing.assert_allclose(xq[1, :2, 0], [-4.1998901, 3.5979796], rtol=1e-6)
    np.testing.assert_allclose(yq[1, :2, 0], [1.3876474, 0.1149339], rtol=1e-5)
    with pytest.raises(ValueError, match="k_support must be an int >= 1"):
        mj.sample_sinusoid_tasks(jax.random.PRNGKey(0), 2, 0, 5)
