"""Plugging a model of your own into the library: Flax NNX, Flax linen, a plain function.

Each adapter returns the library's ``loss_fn(params, batch, step)`` (``batch = (x, y)``)
with params as a plain pytree of arrays, so the result works with ``init_inner_lrs``,
``adapt``, ``outer_step`` and optax as they are.

Batch norm trains with the batch's own statistics (transductive, as the MAML++ reference).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from maml_jax import losses, models

__all__ = ["ModelParts", "nnx_model", "linen_loss_fn", "apply_loss_fn"]

# A linen module's loss function is what ``make_loss_fn`` has always built.
linen_loss_fn = losses.make_loss_fn


class ModelParts(NamedTuple):
    """What the library needs of a model, from ``nnx_model``.

    Attributes:
      params: the trainable parameters (``nnx.Param``) as a nested dict of arrays.
      loss_fn: ``loss_fn(params, (x, y), step) -> (loss, aux)``.
      inner_loop_mask: bools mirroring ``params``: False for the weights of modules that
        keep batch statistics (not adapted in the inner loop, as in the reference).
      model_state: the batch statistics (``nnx.BatchStat``) as a nested dict, the
        ``model_state`` of ``init_meta_state`` (``{}`` without batch norm).
    """

    params: Any
    loss_fn: Callable
    inner_loop_mask: Any
    model_state: Any


def nnx_model(
    module: nnx.Module,
    loss: str = "cross_entropy",
    *,
    use_running_average: bool = False,
    collect_bn_stats: bool = True,
) -> ModelParts:
    """Splits a Flax NNX module into params, a loss function, a mask and BN statistics.

    The module is rebuilt (``nnx.merge``) inside every call of ``loss_fn``, so its
    non-parameter state (``nnx.BatchStat``) belongs to the trace that uses it: an
    ``nnx.BatchNorm`` then works under ``jit``/``vmap``/``grad`` (merging outside gives
    ``TraceContextError: Cannot mutate BatchStat from a different trace level``). The
    module is called as ``module(x, step=step)`` when its ``__call__`` takes ``step``.

    Batch norm: with ``use_running_average=False`` (training, transductive evaluation)
    every ``nnx.BatchNorm`` normalises with the batch's statistics, which (with
    ``collect_bn_stats``) go to ``aux["bn_stats"]``; ``outer_step`` then moves the
    running statistics in ``MetaState.model_state`` once per outer step with its
    ``bn_momentum``, as for ``StepBatchNorm``. ``nnx_model(module,
    use_running_average=True)`` after ``nnx.update(module, ...)`` evaluates with them.
    Modules that draw random numbers (``nnx.Dropout`` in training mode) are not supported.

    Args:
      module: the NNX module (not modified).
      loss: ``"cross_entropy"`` (integer labels) or ``"mse"``.
      use_running_average: normalise with the module's running statistics.
      collect_bn_stats: report the batch statistics in ``aux["bn_stats"]``.

    Returns:
      ``ModelParts(params, loss_fn, inner_loop_mask, model_state)``.

    Example:
      >>> parts = nnx_model(MyNet(nnx.Rngs(0)))
      >>> lrs = init_inner_lrs(parts.params, 1, 0.1, mask=parts.inner_loop_mask)
    """
    losses.check_loss_name(loss)
    graphdef, param_state, rest = nnx.split(module, nnx.Param, ...)
    params = nnx.to_pure_dict(param_state)
    # The loss function keeps its own copies: it must not hold the arrays it returns, which
    # jit_outer_step donates (deletes) with the state. Params are filled in at every call.
    abstract = lambda a: jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a))
    param_template = jax.tree.map(abstract, param_state)
    rest_pure = jax.tree.map(jnp.copy, nnx.to_pure_dict(rest))
    stats = jax.tree.map(jnp.copy, nnx.to_pure_dict(nnx.state(module, nnx.BatchStat)))
    takes_step = losses.takes_argument(type(module).__call__, "step")

    def loss_fn(params, batch, step):
        x, y = batch
        # Fresh states inside this trace: merging mutable state built outside it is what
        # raises TraceContextError.
        p_state, r_state = nnx.clone(param_template), nnx.clone(rest)
        nnx.replace_by_pure_dict(p_state, params)
        nnx.replace_by_pure_dict(r_state, rest_pure)
        model = nnx.merge(graphdef, p_state, r_state)
        norms = [m for _, m in nnx.iter_graph(model) if isinstance(m, nnx.BatchNorm)]
        for m in norms:
            m.use_running_average = use_running_average
            # Momentum 0: after the call the layer's BatchStat holds exactly this batch's
            # statistics; outer_step applies its own momentum to them.
            m.momentum = 0.0
        out = model(x, step=step) if takes_step else model(x)
        value, aux = losses.prediction_loss(out, y, loss)
        if collect_bn_stats and not use_running_average:
            aux["bn_stats"] = jax.lax.stop_gradient(
                nnx.to_pure_dict(nnx.state(model, nnx.BatchStat)))
        return value, aux

    mask = models.inner_loop_mask(params, stats)
    return ModelParts(params, loss_fn, mask, stats)


def apply_loss_fn(
    apply_fn: Callable[..., jax.Array],
    loss: str = "cross_entropy",
) -> Callable[[Any, Any, jax.Array], Any]:
    """Builds ``loss_fn(params, (x, y), step)`` around ``apply_fn(params, x)``.

    For models that are a plain function of a params pytree (Haiku's ``transform``,
    Equinox's ``partition``/``combine``, hand-written JAX). ``apply_fn`` is called with
    ``step=step`` when it takes a ``step`` argument.

    Args:
      apply_fn: ``apply_fn(params, x) -> outputs`` (logits for cross entropy).
      loss: ``"cross_entropy"`` (integer labels) or ``"mse"``.

    Returns:
      ``loss_fn(params, batch, step) -> (loss, aux)``.

    Example:
      >>> loss_fn = apply_loss_fn(lambda p, x: x @ p["w"] + p["b"], "mse")
    """
    losses.check_loss_name(loss)
    takes_step = losses.takes_argument(apply_fn, "step")

    def loss_fn(params, batch, step):
        x, y = batch
        out = apply_fn(params, x, step=step) if takes_step else apply_fn(params, x)
        return losses.prediction_loss(out, y, loss)

    return loss_fn
