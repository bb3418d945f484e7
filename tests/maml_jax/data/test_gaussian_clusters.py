"""maml_jax.data.gaussian_clusters: shapes and labels, the family's statistics against its
definition, fixed held-out tasks, jit, and bad arguments."""

import jax
import numpy as np
import pytest

from maml_jax.data import gaussian_clusters as gc


def test_shapes_labels_and_jit():
    sample = lambda key: gc.sample_gaussian_cluster_tasks(key, 3, 4, 2, 5)
    (xs, ys), (xq, yq) = sample(jax.random.PRNGKey(0))
    assert (xs.shape, ys.shape, xq.shape, yq.shape) == ((3, 8, 16), (3, 8), (3, 20, 16), (3, 20))
    assert ys.dtype == np.int32
    np.testing.assert_array_equal(ys[0], np.repeat(np.arange(4), 2))
    np.testing.assert_array_equal(yq[2], np.repeat(np.arange(4), 5))
    jitted = jax.jit(sample)(jax.random.PRNGKey(0))
    for a, b in zip(jax.tree.leaves(jitted), jax.tree.leaves(((xs, ys), (xq, yq))), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_statistics_follow_the_definition():
    """Around each class's mean the points spread with std ``noise`` in every coordinate;
    the means are standard normal in the informative coordinates and 0 elsewhere; support
    and query of a class share their mean."""
    family = gc.GaussianClusters(dim=6, informative=2, noise=0.3)
    (xs, _), (xq, _) = gc.sample_gaussian_cluster_tasks(jax.random.PRNGKey(1), 400, 3, 50, 50,
                                                        family)
    xs, xq = np.asarray(xs).reshape(400, 3, 50, 6), np.asarray(xq).reshape(400, 3, 50, 6)
    means_s, means_q = xs.mean(axis=2), xq.mean(axis=2)   # (tasks, classes, dim)
    np.testing.assert_allclose(np.std(xs - means_s[:, :, None], axis=(0, 1, 2)), 0.3, rtol=0.02)
    # Sample means carry noise 0.3 / sqrt(50): support and query agree to that.
    assert np.abs(means_s - means_q).max() < 6 * 0.3 * np.sqrt(2 / 50)
    np.testing.assert_allclose(means_s[..., :2].std(), 1.0, rtol=0.05)
    assert np.abs(means_s[..., 2:]).max() < 6 * 0.3 / np.sqrt(50)


def test_held_out_tasks_are_fixed_by_their_seed():
    a = gc.gaussian_cluster_eval_tasks(3, num_tasks=5)
    b = gc.gaussian_cluster_eval_tasks(3, num_tasks=5)
    c = gc.gaussian_cluster_eval_tasks(4, num_tasks=5)
    np.testing.assert_array_equal(a[0][0], b[0][0])
    assert not np.array_equal(a[0][0], c[0][0])


@pytest.mark.parametrize("kwargs, message", [
    ({"num_ways": 0}, "num_ways must be an int >= 1, got 0"),
    ({"k_shot": 1.5}, "k_shot must be an int >= 1"),
    ({"family": gc.GaussianClusters(dim=3, informative=4)}, r"informative \(4\) must be at most"),
    ({"family": gc.GaussianClusters(noise=0.0)}, "noise must be > 0"),
])
def test_bad_arguments_are_named(kwargs, message):
    args = {"num_tasks": 2, "num_ways": 5, "k_shot": 1, "q_query": 1, **kwargs}
    with pytest.raises(ValueError, match=message):
        gc.sample_gaussian_cluster_tasks(jax.random.PRNGKey(0), **args)
