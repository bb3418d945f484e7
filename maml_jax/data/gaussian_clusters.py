"""A synthetic few-shot classification family: Gaussian clusters, sampled on the device.

Each task is an N-way classification of points around N class means. The means vary only
in the first ``informative`` of ``dim`` coordinates (drawn per task from a standard
normal there, 0 elsewhere); every point adds isotropic noise of scale ``noise`` in all
``dim`` coordinates. A model can therefore meta-learn which coordinates matter (its
initialisation) and how fast to adapt to a new task's means (its inner rates), but it
must adapt: the class means and their labels are new in every task. No files, no
downloads: the classification counterpart of :mod:`~maml_jax.data.sinusoid` for tests,
documentation examples and quick studies (the learned inner rates of
``benchmarks/rate_learning.py``).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["GaussianClusters", "sample_gaussian_cluster_tasks", "gaussian_cluster_eval_tasks"]


class GaussianClusters(NamedTuple):
    """The family: points in ``dim`` coordinates, class means in the first ``informative``.

    Attributes:
      dim: coordinates of every point.
      informative: leading coordinates in which the class means differ (1..dim).
      noise: standard deviation of every point around its class mean, in every coordinate.
    """

    dim: int = 16
    informative: int = 4
    noise: float = 0.5


def _check_count(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return value


def _check_family(family: GaussianClusters) -> None:
    _check_count("dim", family.dim)
    _check_count("informative", family.informative)
    if family.informative > family.dim:
        raise ValueError(f"informative ({family.informative}) must be at most dim "
                         f"({family.dim})")
    if not family.noise > 0:
        raise ValueError(f"noise must be > 0, got {family.noise!r}")


def sample_gaussian_cluster_tasks(
    key: jax.Array,
    num_tasks: int,
    num_ways: int,
    k_shot: int,
    q_query: int,
    family: GaussianClusters = GaussianClusters(),
):
    """Draws ``num_tasks`` N-way K-shot tasks with ``q_query`` query points per class.

    Returns:
      ``((xs, ys), (xq, yq))``: inputs ``(num_tasks, num_ways * k, dim)`` float32 and int32
      labels ``(num_tasks, num_ways * k)`` in ``[0, num_ways)``, class by class.

    Example:
      >>> (xs, ys), (xq, yq) = sample_gaussian_cluster_tasks(jax.random.PRNGKey(0), 8, 5, 2, 3)
      >>> xs.shape, ys.shape, xq.shape, ys[0].tolist()
      ((8, 10, 16), (8, 10), (8, 15, 16), [0, 0, 1, 1, 2, 2, 3, 3, 4, 4])
    """
    for name, value in (("num_tasks", num_tasks), ("num_ways", num_ways), ("k_shot", k_shot),
                        ("q_query", q_query)):
        _check_count(name, value)
    _check_family(family)
    k_means, k_points = jax.random.split(key)
    means = jax.random.normal(k_means, (num_tasks, num_ways, family.informative))
    means = jnp.pad(means, ((0, 0), (0, 0), (0, family.dim - family.informative)))
    per_class = k_shot + q_query
    noise = family.noise * jax.random.normal(
        k_points, (num_tasks, num_ways, per_class, family.dim))
    points = means[:, :, None, :] + noise
    labels = jnp.broadcast_to(jnp.arange(num_ways, dtype=jnp.int32)[None, :, None],
                              (num_tasks, num_ways, per_class))

    def flat(a):   # (tasks, ways, k, ...) -> (tasks, ways * k, ...)
        return a.reshape(num_tasks, num_ways * a.shape[2], *a.shape[3:])

    support = (flat(points[:, :, :k_shot]), flat(labels[:, :, :k_shot]))
    query = (flat(points[:, :, k_shot:]), flat(labels[:, :, k_shot:]))
    return support, query


def gaussian_cluster_eval_tasks(seed: int, num_tasks: int = 600, num_ways: int = 5,
                                k_shot: int = 2, q_query: int = 15,
                                family: GaussianClusters = GaussianClusters()):
    """A fixed set of held-out tasks: the same for a given seed whatever else happens.

    Example:
      >>> (xs, _), _ = gaussian_cluster_eval_tasks(0, num_tasks=4)
      >>> xs.shape
      (4, 10, 16)
    """
    key = jax.random.fold_in(jax.random.PRNGKey(seed), 0xC1A55)
    return sample_gaussian_cluster_tasks(key, num_tasks, num_ways, k_shot, q_query, family)
