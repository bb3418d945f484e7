"""How a batch of tasks is run: ``vmap``, ``lax.map``, and either split over devices.

Every per-task computation of the library (the meta-gradient in ``maml_jax.meta``, the
sharded evaluation in ``maml_jax.parallel``) goes through ``map_over_tasks`` or
``map_tasks``; ``resolve_task_batching`` turns ``MetaConfig.task_batching="auto"`` into a
concrete choice. The module depends on nothing else in the library, so ``meta`` and
``parallel`` both import it and not each other.

Example:
  >>> import jax.numpy as jnp
  >>> xs = jnp.arange(6.0).reshape(3, 2)
  >>> map_over_tasks(lambda x: x.sum(), "map", None, xs)
  Array([1., 5., 9.], dtype=float32)
  >>> map_tasks(lambda x: 2 * x, xs, sharding=None, batch_size=2)[:, 0]
  Array([0., 4., 8.], dtype=float32)
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["TASK_BATCHING", "has_convolution", "resolve_task_batching", "check_task_groups",
           "map_over_tasks", "map_tasks"]

#: ``MetaConfig.task_batching`` values: "vmap" over tasks, "map" (``lax.map``, one task
#: after another), or "auto" (``resolve_task_batching``).
TASK_BATCHING = ("auto", "vmap", "map")


def has_convolution(jaxpr: Any) -> bool:
    """Whether a (closed) jaxpr, or any jaxpr nested in its equations, has a convolution.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> conv = lambda x, k: jax.lax.conv(x, k, (1, 1), "SAME")
      >>> has_convolution(jax.make_jaxpr(conv)(jnp.ones((1, 1, 4, 4)), jnp.ones((1, 1, 3, 3))))
      True
      >>> has_convolution(jax.make_jaxpr(jnp.sin)(1.0))
      False
    """
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "conv_general_dilated":
            return True
        for value in eqn.params.values():
            nested = value if isinstance(value, (tuple, list)) else (value,)
            if any(hasattr(getattr(v, "jaxpr", v), "eqns") and has_convolution(v)
                   for v in nested):
                return True
    return False


def resolve_task_batching(task_batching: str, loss_fn: Callable | None = None,
                          params: Any = None, example_batch: Any = None) -> str:
    """``"vmap"`` or ``"map"`` for a ``task_batching`` setting (see ``MetaConfig``).

    ``"auto"`` is ``"map"`` on the CPU backend when ``loss_fn``'s forward pass has a
    convolution, else ``"vmap"``: on CPU, ``vmap`` turns per-task convolutions into grouped
    convolutions that XLA:CPU runs more than 30x slower, while ``lax.map`` keeps them plain;
    convolutions written as matmuls (Conv4's CPU default, ``conv_impl="patches"``) vmap
    well. One abstract trace of the forward pass (at compile time) tells them apart.

    Args:
      task_batching: one of ``TASK_BATCHING``.
      loss_fn: ``loss_fn(params, batch, step)``; None: ``"auto"`` means ``"vmap"``.
      params: the model parameters (arrays or shape/dtype structs).
      example_batch: one task's batch (no task axis).

    Example:
      >>> resolve_task_batching("map")
      'map'
      >>> resolve_task_batching("auto", lambda p, b, t: (p * b).sum(), 1.0, jnp.ones(3))
      'vmap'
    """
    if task_batching not in TASK_BATCHING:
        raise ValueError(f"unknown task_batching {task_batching!r}; expected {TASK_BATCHING}")
    if task_batching != "auto":
        return task_batching
    if jax.default_backend() != "cpu" or loss_fn is None:
        return "vmap"
    abstract = lambda t: jax.tree.map(lambda a: jax.ShapeDtypeStruct(jnp.shape(a),
                                                                     jnp.result_type(a)), t)
    jaxpr = jax.make_jaxpr(loss_fn)(abstract(params), abstract(example_batch),
                                    jax.ShapeDtypeStruct((), jnp.int32))
    return "map" if has_convolution(jaxpr) else "vmap"


def check_task_groups(groups: Any) -> int:
    """``groups`` if it is an int >= 1 (``MetaConfig.task_groups``), else a ValueError."""
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"task_groups must be an int >= 1, got {groups!r}")
    return groups


def map_over_tasks(fn: Callable, batching: str, task_sharding: Any, *args: Any,
                   groups: int = 1) -> Any:
    """``fn`` applied to every task: the leading axis of each of ``args``.

    Args:
      fn: ``fn(*one_task_args)``.
      batching: ``"vmap"`` or ``"map"`` (``resolve_task_batching``).
      task_sharding: None (one device), or a ``NamedSharding`` of the task axis
        (``maml_jax.parallel.task_sharding``): the tasks are constrained to it, so the
        compiler splits the per-task work over the devices. ``lax.map``, a loop that
        cannot be split along its iterations, then runs as ``map_tasks``.
      *args: pytrees with a leading task axis.
      groups: split the tasks into this many consecutive groups (at most one per task),
        each batched on its own and the results concatenated in task order: independent
        computations that XLA:CPU's runtime runs at the same time on different cores
        (``MetaConfig.task_groups``). Ignored with a ``task_sharding``, whose devices
        split the tasks already.

    Example:
      >>> xs = jnp.arange(10.0).reshape(5, 2)
      >>> map_over_tasks(lambda x: x.sum(), "vmap", None, xs, groups=2)
      Array([ 1.,  5.,  9., 13., 17.], dtype=float32)
    """
    check_task_groups(groups)
    if task_sharding is not None:
        args = jax.lax.with_sharding_constraint(args, task_sharding)
        groups = 1
    n = jax.tree.leaves(args)[0].shape[0]
    groups = min(groups, n)

    def run(group_args):
        if batching == "vmap":
            return jax.vmap(fn, in_axes=0)(*group_args)
        return map_tasks(lambda a: fn(*a), group_args, sharding=task_sharding)

    if groups == 1:
        return run(args)
    bounds = [i * n // groups for i in range(groups + 1)]
    outs = [run(jax.tree.map(lambda a, lo=lo, hi=hi: a[lo:hi], args))
            for lo, hi in itertools.pairwise(bounds)]
    return jax.tree.map(lambda *parts: jnp.concatenate(parts), *outs)


def map_tasks(fn: Callable, tasks: Any, *, sharding: Any = None,
              batch_size: int | None = None) -> Any:
    """``lax.map(fn, tasks, batch_size=...)``, with the tasks split over ``sharding``'s devices.

    For use inside ``jax.jit``. Any number of tasks: the last device's shard is padded
    with copies of the first task, whose results are dropped. With a sharding it runs as
    ``vmap`` over the device shards of a ``lax.map`` over each shard's tasks.

    Args:
      fn: ``fn(one_task) -> outputs``.
      tasks: a pytree with a leading task axis.
      sharding: None (plain ``lax.map``) or a ``NamedSharding`` of the task axis.
      batch_size: tasks vectorised together inside the loop (None: one at a time).
    """
    n = jax.tree.leaves(tasks)[0].shape[0]
    if sharding is None:
        return jax.lax.map(fn, tasks, batch_size=None if batch_size is None else min(batch_size, n))
    d = math.prod(sharding.mesh.shape[a] for a in jax.tree.leaves(sharding.spec[0]))
    per = -(-n // d)

    def split(x):
        if per * d > n:
            x = jnp.concatenate([x, jnp.repeat(x[:1], per * d - n, axis=0)])
        return jax.lax.with_sharding_constraint(x.reshape((d, per, *x.shape[1:])), sharding)

    bs = None if batch_size is None else min(batch_size, per)
    out = jax.vmap(lambda t: jax.lax.map(fn, t, batch_size=bs))(jax.tree.map(split, tasks))
    return jax.tree.map(lambda x: x.reshape((d * per, *x.shape[2:]))[:n], out)
