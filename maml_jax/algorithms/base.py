"""The interface every meta-learning algorithm implements, and what they share.

An algorithm is one hashable object (a frozen dataclass of its own static settings) with
three methods: ``support_objective(loss_fn, anchor)``, what its inner steps descend;
``phase(config, epoch)``, the static part of its step that may change with the
epoch (MAML++'s derivative-order and multi-step-loss schedule; a constant for most
algorithms), and ``meta_gradient``, the loss and meta-gradient of a batch of tasks for one
phase. ``MetaConfig.algorithm`` holds it, so the outer step, ``train_steps``, the sharded
and population paths and the facade take it whole, through the config they already take.
The loop settings every algorithm shares (inner steps, task batching, remat, unroll, the
inner-gradient clip, what an epoch is) stay in ``MetaConfig``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, Protocol, runtime_checkable

import chex
import jax
import jax.numpy as jnp
import numpy as np

from maml_jax import core, losses
from maml_jax.task_batching import map_over_tasks, resolve_task_batching

PyTree = chex.ArrayTree
# A ``maml_jax.meta.MetaConfig``: its class holds an algorithm, so the algorithms do not
# import it (the library has no import cycle).
LoopConfig = Any

__all__ = ["Algorithm", "LoopConfig", "validate_tasks", "support_label_errors", "inner_unroll",
           "task_batching_for", "direction_meta_gradient"]


@runtime_checkable
class Algorithm(Protocol):
    """What ``outer_step`` needs of a meta-learning algorithm.

    Attributes:
      name: the name it is registered under (``maml_jax.algorithms.ALGORITHMS``).
    """

    name: str

    def phase(self, config: LoopConfig, epoch: int) -> Hashable:
        """The static phase of the step for ``epoch`` (a hashable Python value: it is a
        ``jax.jit`` static argument, so a new phase compiles a new step)."""

    def support_objective(self, loss_fn: Callable, anchor: PyTree) -> Callable:
        """What the inner steps descend, adapting from the meta-parameters ``anchor``:
        ``loss_fn`` itself for most algorithms. Evaluation (``evaluate_tasks(...,
        algorithm=)``) adapts to new tasks with it, as meta-training did."""

    def meta_gradient(self, meta_params: PyTree, tasks: tuple[Any, Any], *, step: Any,
                      loss_fn: Callable, config: LoopConfig, phase: Hashable,
                      task_sharding: Any = None) -> tuple[jax.Array, PyTree, dict[str, Any]]:
        """``(loss, grads, extras)`` of a batch of tasks.

        ``grads`` mirrors ``meta_params`` (``{"params", "inner_lrs"}``): the direction the
        meta-optimizer descends. ``extras`` holds ``per_step_loss`` ``(tasks, steps)``,
        ``aux`` (per-task scalar metrics), ``bn_stats`` (query batch statistics with a
        leading task axis, or None), ``bn_stats_every_step`` (a Python bool: whether
        ``bn_stats`` has a step axis) and ``label_errors`` (``(tasks, 2)`` or None).
        """


def validate_tasks(tasks: Any) -> int:
    """Checks a ``(support, query)`` task batch's shapes; returns the number of tasks.

    Every leaf needs the same leading task axis, of at least one task; support and query
    must have the same structure and the same per-example shapes (all axes after the
    example axis); within the support (and within the query) every leaf has the same
    number of examples, at least one.

    Raises:
      ValueError: naming the mismatch (before anything is traced deep inside JAX).

    Example:
      >>> tasks = ((jnp.zeros((2, 5, 3)), jnp.zeros((2, 5))), (jnp.zeros((2, 0, 3)),
      ...                                                    jnp.zeros((2, 0))))
      >>> validate_tasks(tasks)
      Traceback (most recent call last):
      ...
      ValueError: the query set of every task is empty (example axis 0): [(2, 0, 3), (2, 0)]
    """
    if not (isinstance(tasks, (tuple, list)) and len(tasks) == 2):
        raise ValueError("tasks must be a (support, query) pair of batches with a task axis")
    support, query = tasks
    s_leaves, s_def = jax.tree.flatten(support)
    q_leaves, q_def = jax.tree.flatten(query)
    if s_def != q_def:
        raise ValueError(f"support and query batches differ in structure: {s_def} vs {q_def}")
    if not s_leaves:
        raise ValueError("empty task batch")
    shapes = [tuple(np.shape(x)) for x in s_leaves + q_leaves]
    if any(len(s) < 2 for s in shapes):
        raise ValueError("every task array needs a task axis and an example axis, "
                         f"got shapes {shapes}")
    try:
        chex.assert_equal_shape_prefix(s_leaves + q_leaves, 1)
    except AssertionError:
        raise ValueError("support and query disagree on the number of tasks (leading "
                         f"axis): {shapes}") from None
    if shapes[0][0] == 0:
        raise ValueError(f"the task batch holds no tasks (leading axis 0): {shapes}")
    for name, leaves in (("support", s_leaves), ("query", q_leaves)):
        if len({np.shape(x)[1] for x in leaves}) != 1:
            raise ValueError(f"{name} arrays disagree on the number of examples: "
                             f"{[np.shape(x) for x in leaves]}")
        if np.shape(leaves[0])[1] == 0:
            # A mean over no examples: a NaN loss, or a finite one where a model's batch
            # norm guards its division.
            raise ValueError(f"the {name} set of every task is empty (example axis 0): "
                             f"{[np.shape(x) for x in leaves]}")
    for i, (a, b) in enumerate(zip(s_leaves, q_leaves, strict=True)):
        if np.shape(a)[2:] != np.shape(b)[2:]:
            raise ValueError(f"support and query example shapes differ for array {i}: "
                             f"support {np.shape(a)} vs query {np.shape(b)}")
    return shapes[0][0]


def support_label_errors(loss_fn: Callable, params: PyTree, batch: Any) -> jax.Array:
    """The ``LABEL_ERRORS`` a loss reports for ``batch``: the support set's, whose losses the
    inner loop differentiates without their aux. Only the labels feed the count, so XLA
    drops the forward pass traced here: it costs nothing in the compiled step."""
    _, aux = core.split_loss_output(loss_fn(params, batch, jnp.int32(0)))
    if losses.LABEL_ERRORS not in aux:
        raise ValueError(f"loss_fn reports {losses.LABEL_ERRORS!r} for the query batch but "
                         "not for the support batch: it must report it for every batch")
    return aux[losses.LABEL_ERRORS]


def inner_unroll(config: LoopConfig) -> int | bool:
    """The inner loop's ``lax.scan`` unroll factor for ``config.unroll`` (``"auto"``
    resolved: ``min(num_inner_steps, 5)`` on CPU, 1 elsewhere and under remat)."""
    if config.unroll != "auto":
        return config.unroll
    # remat saves memory per scan iteration: unrolling would put several inner steps into
    # one rematerialised region and give the memory back (docs/performance.md).
    if config.remat:
        return 1
    return min(config.num_inner_steps, 5) if jax.default_backend() == "cpu" else 1


def direction_meta_gradient(
    direction: Callable[[PyTree, PyTree, Any, Any], tuple[jax.Array, dict, PyTree]],
    meta_params: PyTree,
    tasks: tuple[Any, Any],
    *,
    loss_fn: Callable,
    config: LoopConfig,
    task_sharding: Any = None,
) -> tuple[jax.Array, PyTree, dict[str, Any]]:
    """The frame of algorithms whose meta-gradient is a per-task direction found after
    adaptation, with no derivative through the inner loop (Reptile, iMAML).

    ``direction(params, inner_lrs, support, query) -> (query loss, query aux, direction)``
    for one task, the meta-parameters and rates held constant; the meta-gradient is the
    directions' mean over tasks, the rates' is zero (not learned). As with MAML's
    final-step loss, only the last entry of ``per_step_loss`` is non-zero.

    Returns:
      ``(loss, grads, extras)`` as ``Algorithm.meta_gradient``.
    """
    validate_tasks(tasks)
    support, query = tasks
    n = config.num_inner_steps
    params = jax.lax.stop_gradient(meta_params["params"])
    lrs = jax.lax.stop_gradient(meta_params["inner_lrs"])

    def per_task(s, q):
        loss, aux, d = direction(params, lrs, s, q)
        per_step = jnp.zeros((n,), loss.dtype).at[-1].set(loss)
        bn = aux.pop("bn_stats", None)
        query_errors = aux.pop(losses.LABEL_ERRORS, None)
        errors = None if query_errors is None else jnp.stack(
            [support_label_errors(loss_fn, params, s), query_errors])
        return loss, (d, per_step, aux, bn, errors)

    batching = task_batching_for(config, loss_fn, params, support)
    task_losses, (directions, per_step, aux, bn, errors) = map_over_tasks(
        per_task, batching, task_sharding, support, query, groups=config.task_groups)
    grads = {"params": jax.tree.map(lambda d: jnp.mean(d, axis=0), directions),
             "inner_lrs": jax.tree.map(jnp.zeros_like, meta_params["inner_lrs"])}
    return jnp.mean(task_losses), grads, {
        "per_step_loss": per_step, "aux": aux, "bn_stats": bn,
        "bn_stats_every_step": False, "label_errors": errors}


def task_batching_for(config: LoopConfig, loss_fn: Callable, params: PyTree,
                      support: Any) -> str:
    """``config.task_batching`` resolved for this loss and one task of ``support``."""
    one_task_support = jax.tree.map(lambda a: a[0], support)
    return resolve_task_batching(config.task_batching, loss_fn, params, one_task_support)
