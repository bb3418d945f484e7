"""The sinusoid regression task family of the MAML paper, sampled on the device."""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["SinusoidFamily", "sample_sinusoid_tasks", "sinusoid_eval_tasks"]


class SinusoidFamily(NamedTuple):
    """Ranges of the task family: amplitude U[0.1, 5], phase U[0, pi], x U[-5, 5]."""

    amplitude: tuple[float, float] = (0.1, 5.0)
    phase: tuple[float, float] = (0.0, math.pi)
    x: tuple[float, float] = (-5.0, 5.0)


def _check(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return value


def sample_sinusoid_tasks(
    key: jax.Array,
    num_tasks: int,
    k_support: int,
    k_query: int,
    family: SinusoidFamily = SinusoidFamily(),
):
    """Draws ``num_tasks`` sinusoid tasks with ``k_support``/``k_query`` points each.

    Returns:
      ``((xs, ys), (xq, yq))`` with shapes ``(num_tasks, k, 1)``.

    Example:
      >>> (xs, ys), (xq, yq) = sample_sinusoid_tasks(jax.random.PRNGKey(0), 25, 10, 10)
      >>> xs.shape
      (25, 10, 1)
    """
    _check("num_tasks", num_tasks)
    _check("k_support", k_support)
    _check("k_query", k_query)
    k_amp, k_phase, k_x = jax.random.split(key, 3)
    amp = jax.random.uniform(k_amp, (num_tasks, 1, 1), minval=family.amplitude[0],
                             maxval=family.amplitude[1])
    phase = jax.random.uniform(k_phase, (num_tasks, 1, 1), minval=family.phase[0],
                               maxval=family.phase[1])
    x = jax.random.uniform(k_x, (num_tasks, k_support + k_query, 1), minval=family.x[0],
                           maxval=family.x[1])
    y = amp * jnp.sin(x - phase)
    return (x[:, :k_support], y[:, :k_support]), (x[:, k_support:], y[:, k_support:])


def sinusoid_eval_tasks(seed: int, num_tasks: int = 600, k_support: int = 10,
                        k_query: int = 100, family: SinusoidFamily = SinusoidFamily()):
    """A fixed set of test tasks: the same for a given seed whatever else happens."""
    key = jax.random.fold_in(jax.random.PRNGKey(seed), 0x5EED)
    return sample_sinusoid_tasks(key, num_tasks, k_support, k_query, family)
