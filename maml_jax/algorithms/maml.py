"""MAML (Finn et al. 2017) and MAML++ (Antoniou et al. 2019): the meta-gradient through
the inner SGD steps, second or first order, with MAML++'s options.

MAML++'s options are ``MetaConfig``'s: the multi-step loss (``msl``, ``msl_epochs``),
learned inner rates per layer and step or per weight (``learn_inner_lrs`` and the rates'
granularity, ``init_inner_lrs``), derivative-order annealing (``first_order_epochs``),
per-step batch-norm weights and statistics (the model's, ``StepBatchNorm``) and cosine
annealing of the meta learning rate (``make_outer_loop(lr_schedule="cosine")``). Meta-SGD
is MAML with per-weight rates; ANIL is MAML whose inner loop adapts the head alone
(``inner_loop_mask(only="head")``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp

from maml_jax import core, losses
from maml_jax.algorithms.base import (
    LoopConfig,
    inner_unroll,
    support_label_errors,
    task_batching_for,
    validate_tasks,
)
from maml_jax.task_batching import map_over_tasks

PyTree = chex.ArrayTree

__all__ = ["MAML", "MAMLPhase", "first_order_meta_gradient"]


class MAMLPhase(NamedTuple):
    """MAML's static phase: the meta-gradient's order and whether the multi-step loss is on.

    A tuple, so ``first_order, msl = phase`` unpacks it and ``(False, True)`` is the same
    phase (and the same ``jax.jit`` cache entry)."""

    first_order: bool
    msl: bool


@dataclasses.dataclass(frozen=True)
class MAML:
    """MAML and MAML++: ``MetaConfig``'s default algorithm (it has no settings of its own;
    MAML++'s options are ``MetaConfig``'s, see the module docstring)."""

    name = "maml"

    def phase(self, config: LoopConfig, epoch: int) -> MAMLPhase:
        """The static ``(first_order, msl)`` pair for an epoch (DA and MSL schedule).

        After ``msl_epochs`` the multi-step loss is a one-hot on the last step, so the step
        is compiled without the intermediate query passes, as the reference skips them.

        Example:
          >>> from maml_jax import MetaConfig
          >>> MAML().phase(MetaConfig(first_order_epochs=2, msl_epochs=3), 2)
          MAMLPhase(first_order=False, msl=True)
        """
        first_order = config.first_order or epoch < config.first_order_epochs
        msl = config.msl and epoch < config.msl_epochs
        return MAMLPhase(bool(first_order), bool(msl))

    def support_objective(self, loss_fn: Callable, anchor: PyTree) -> Callable:
        """The inner steps descend the task loss itself."""
        del anchor
        return loss_fn

    def meta_gradient(
        self,
        meta_params: PyTree,
        tasks: tuple[Any, Any],
        *,
        step: Any,
        loss_fn: Callable,
        config: LoopConfig,
        phase: tuple[bool, bool],
        task_sharding: Any = None,
    ) -> tuple[jax.Array, PyTree, dict[str, Any]]:
        """The MAML meta loss of a batch of tasks (mean over tasks of the query loss after
        adaptation, or MAML++'s multi-step loss) and its gradient.

        Args:
          meta_params: ``{"params": ..., "inner_lrs": ...}``.
          tasks: ``(support, query)`` batches with a leading task axis.
          step: the outer step (may be traced); its epoch sets the MSL weights.
          loss_fn: ``loss_fn(params, batch, step) -> loss`` or ``(loss, aux dict)``.
          config: the static ``MetaConfig``.
          phase: ``(first_order, msl)`` (``MAMLPhase``, from ``phase``).
          task_sharding: a ``NamedSharding`` of the task axis, or None.

        Returns:
          ``(loss, grads, extras)`` (see ``maml_jax.meta.meta_gradient``); without MSL only
          the last entry of ``per_step_loss`` is non-zero.
        """
        validate_tasks(tasks)
        first_order, msl = phase
        if first_order:   # the same values without a reverse pass through the inner loop
            return first_order_meta_gradient(meta_params, tasks, step=step, loss_fn=loss_fn,
                                             config=config, msl=msl,
                                             task_sharding=task_sharding)
        # Second order from here: reverse mode through the inner loop.
        n = config.num_inner_steps
        support, query = tasks
        weights = _step_weights(config, step, msl)

        def per_task(meta_params, s, q):
            params, lrs = meta_params["params"], meta_params["inner_lrs"]
            if not config.learn_inner_lrs:
                lrs = jax.lax.stop_gradient(lrs)
            if msl:
                loss, (per_step, aux) = core.task_loss(
                    loss_fn, params, lrs, s, q, num_steps=n, step_weights=weights,
                    grad_clip=config.inner_grad_clip, has_aux=True,
                    remat=config.remat, unroll=inner_unroll(config))
                bn = aux.pop("bn_stats", None)  # leaves (n, C): every step's query statistics
                aux = jax.tree.map(lambda a: a[-1], aux)  # report the final step's metrics
            else:
                adapted = core.adapt(
                    loss_fn, params, lrs, s, num_steps=n, grad_clip=config.inner_grad_clip,
                    remat=config.remat, unroll=inner_unroll(config))
                loss, aux = core.split_loss_output(loss_fn(adapted, q, jnp.int32(n - 1)))
                per_step = jnp.zeros((n,), loss.dtype).at[-1].set(loss)
                bn = aux.pop("bn_stats", None)
            query_errors = aux.pop(losses.LABEL_ERRORS, None)
            errors = None if query_errors is None else jnp.stack(
                [support_label_errors(loss_fn, params, s), query_errors])
            return loss, (per_step, aux, bn, errors)

        batching = task_batching_for(config, loss_fn, meta_params["params"], support)

        def batch_loss(meta_params):
            task_losses, outputs = map_over_tasks(
                lambda s, q: per_task(meta_params, s, q), batching, task_sharding,
                support, query, groups=config.task_groups)
            return jnp.mean(task_losses), outputs

        (loss, (per_step, aux, bn, errors)), grads = jax.value_and_grad(
            batch_loss, has_aux=True)(meta_params)
        return loss, grads, {"per_step_loss": per_step, "aux": aux, "bn_stats": bn,
                             "bn_stats_every_step": msl, "label_errors": errors}


def _step_weights(config: LoopConfig, step: Any, msl: bool) -> jax.Array:
    """The query losses' weights of the outer step ``step``: MSL's for its epoch, or the
    final step's alone."""
    n = config.num_inner_steps
    if msl:
        return core.msl_weights(step // config.iterations_per_epoch, n, config.msl_epochs)
    return core.final_step_weights(n)


def first_order_meta_gradient(
    meta_params: PyTree,
    tasks: tuple[Any, Any],
    *,
    step: Any,
    loss_fn: Callable,
    config: LoopConfig,
    msl: bool,
    task_sharding: Any = None,
) -> tuple[jax.Array, PyTree, dict[str, Any]]:
    """First-order MAML's meta-gradient in closed form: no reverse pass through the inner
    loop.

    With the inner gradients held constant, every adapted parameter moves by a constant
    from the meta-parameter (``d phi_k / d theta = I``) and the rates enter linearly
    (``d phi_{k+1} / d lr_t = -g_t`` for ``t <= k``, ``g_t`` the step's clipped support
    gradient). So the gradient of ``sum_k w_k L_query(phi_{k+1})`` is
    ``sum_k w_k grad_k`` for the parameters and ``-reduce(g_t * sum_{k >= t} w_k grad_k)``
    for the rate of step ``t`` (summed over a rate's weights), ``grad_k`` the query loss's
    gradient after step ``k``: one forward scan of support and query gradients, as PyTorch
    computes first-order MAML task by task. The same values as differentiating the inner
    loop with its gradients stopped (the earlier formulation; ``tests/maml_jax/test_meta.py``
    compares the two).
    """
    n = config.num_inner_steps
    support, query = tasks
    weights = _step_weights(config, step, msl)
    params, lrs = meta_params["params"], meta_params["inner_lrs"]
    lrs_steps = core._per_step_lrs(params, lrs, n)
    support_loss = core._loss_only(loss_fn)
    last = jnp.int32(n - 1)

    def query_value_and_grad(p, q, t):
        return jax.value_and_grad(lambda p_: core.split_loss_output(loss_fn(p_, q, t)),
                                  has_aux=True)(p)

    def per_task(s, q):
        def body(p, xs):
            t, lrs_t = xs
            g = core.clip_inner_grads(jax.grad(support_loss)(p, s, t), lrs_t,
                                      config.inner_grad_clip)
            p = core._sgd_update(p, g, lrs_t)
            if not msl:
                return p, g
            (q_loss, aux), q_grad = query_value_and_grad(p, q, t)
            return p, (g, q_loss, aux, q_grad)

        steps = jnp.arange(n, dtype=jnp.int32)
        adapted, outs = jax.lax.scan(body, params, (steps, lrs_steps),
                                     unroll=inner_unroll(config))
        if msl:
            support_grads, per_step, aux, query_grads = outs
            bn = aux.pop("bn_stats", None)   # leaves (n, C): every step's query statistics
            aux = jax.tree.map(lambda a: a[-1], aux)
        else:
            support_grads = outs
            (loss, aux), q_grad = query_value_and_grad(adapted, q, last)
            per_step = jnp.zeros((n,), loss.dtype).at[-1].set(loss)
            query_grads = jax.tree.map(
                lambda a: jnp.zeros((n, *a.shape), a.dtype).at[-1].set(a), q_grad)
            bn = aux.pop("bn_stats", None)
        w = weights.astype(per_step.dtype)
        weighted = jax.tree.map(lambda a: a * w.reshape((n,) + (1,) * (a.ndim - 1)).astype(
            a.dtype), query_grads)
        param_grads = jax.tree.map(lambda a: jnp.sum(a, axis=0), weighted)
        # sum_{k >= t} w_k grad_k: the query gradients each step's rate reaches.
        later = jax.tree.map(lambda a: jnp.flip(jnp.cumsum(jnp.flip(a, 0), 0), 0), weighted)

        def rate_grad(lr, g, r):
            if lr is None:
                return None
            if not config.learn_inner_lrs:
                return jnp.zeros_like(lr)
            d = -(g * r)                                 # (n, *p.shape)
            if lr.ndim == 0:                             # "scalar": one rate, every step
                return jnp.sum(d).astype(lr.dtype)
            if lr.ndim == 1:                             # "layer_step": one per step
                return jnp.sum(d.reshape(n, -1), axis=1).astype(lr.dtype)
            if lr.shape[0] == 1:                         # "meta_sgd": per weight, every step
                return jnp.sum(d, axis=0, keepdims=True).astype(lr.dtype)
            return d.astype(lr.dtype)                    # "parameter": per weight and step

        rate_grads = jax.tree.map(rate_grad, lrs, support_grads, later,
                                  is_leaf=lambda x: x is None)
        query_errors = aux.pop(losses.LABEL_ERRORS, None)
        errors = None if query_errors is None else jnp.stack(
            [support_label_errors(loss_fn, params, s), query_errors])
        grads = {"params": param_grads, "inner_lrs": rate_grads}
        return jnp.sum(w * per_step), (grads, per_step, aux, bn, errors)

    batching = task_batching_for(config, loss_fn, params, support)
    task_losses, (grads, per_step, aux, bn, errors) = map_over_tasks(
        per_task, batching, task_sharding, support, query, groups=config.task_groups)
    grads = jax.tree.map(lambda g: jnp.mean(g, axis=0), grads)
    return jnp.mean(task_losses), grads, {"per_step_loss": per_step, "aux": aux,
                                          "bn_stats": bn, "bn_stats_every_step": msl,
                                          "label_errors": errors}
