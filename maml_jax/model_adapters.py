"""Plugging a model into the library: Flax linen, Flax NNX, a plain function.

Each adapter returns the library's ``loss_fn(params, batch, step)`` (``batch = (x, y)``)
with params as a plain pytree of arrays, so the result works with ``init_inner_lrs``,
``adapt``, ``outer_step`` and optax as they are: ``make_loss_fn`` for a linen module
(``Conv4``, ``MLP`` or yours), ``nnx_model`` for an NNX module, ``apply_loss_fn`` for a
function of a params pytree. ``inner_loop_mask`` says which parameters the inner loop
adapts (not batch-norm weights; ``only="head"`` for ANIL).

Batch norm trains with the batch's own statistics (transductive, as the MAML++ reference).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx

from maml_jax import losses

__all__ = ["make_loss_fn", "ModelParts", "nnx_model", "apply_loss_fn", "inner_loop_mask"]


def _takes_argument(fn: Callable, name: str) -> bool:
    """Whether ``fn``'s signature has a parameter ``name`` (False if it has none to read).

    The adapters pass ``step=`` / ``use_running_average=`` only to models that take them.
    """
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def make_loss_fn(
    model: nn.Module,
    loss: str = "cross_entropy",
    *,
    has_aux: bool = True,
    batch_stats: Any = None,
    use_running_average: bool = False,
    collect_bn_stats: bool = False,
) -> Callable[[Any, Any, jax.Array], Any]:
    """Builds ``loss_fn(params, (x, y), step)`` for a Flax model.

    The model is called as ``model.apply({"params": params, ...}, x, step=step)`` when its
    ``__call__`` takes ``step`` (per-step batch norm), else as ``model.apply(..., x)``.

    Args:
      model: a ``flax.linen`` module.
      loss: ``"cross_entropy"`` (integer labels) or ``"mse"``.
      has_aux: return ``(loss, aux)`` with ``aux = {"accuracy": ...}`` for classification
        (and ``"bn_stats"`` if ``collect_bn_stats``); else just the scalar loss. Every
        entry point of the library accepts both forms.
      batch_stats: the model's ``batch_stats`` collection (per-step running statistics),
        needed when ``use_running_average``.
      use_running_average: normalise with running statistics (non-transductive eval).
        The statistics ``outer_step`` keeps are updated once per outer step from the
        query passes, not in every forward pass as in the MAML++ reference (see
        ``meta._update_running_stats``), so such numbers differ from the reference's.
      collect_bn_stats: put this batch's BN statistics into ``aux["bn_stats"]`` (those of
        ``StepBatchNorm`` layers; a standard ``nn.BatchNorm`` normalises with the batch's
        statistics too but reports none, so ``outer_step`` leaves its running statistics
        at their initial values: evaluate such models transductively).

    Returns:
      The loss function.

    Example:
      >>> from maml_jax import MLP
      >>> model = MLP(hidden=(8,))
      >>> params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 1)))["params"]
      >>> loss_fn = make_loss_fn(model, "mse", has_aux=False)
      >>> loss_fn(params, (jnp.zeros((5, 1)), jnp.zeros((5, 1))), 0).shape
      ()
    """
    losses.check_loss_name(loss)
    takes_step = _takes_argument(type(model).__call__, "step")
    takes_ra = _takes_argument(type(model).__call__, "use_running_average")
    if use_running_average and batch_stats is None:
        raise ValueError("use_running_average=True needs the model's batch_stats")

    def loss_fn(params, batch, step):
        x, y = batch
        variables = {"params": params}
        if batch_stats is not None:
            variables["batch_stats"] = batch_stats
        kwargs = {}
        if takes_step:
            kwargs["step"] = step
        if takes_ra and use_running_average:
            kwargs["use_running_average"] = True
        # batch_stats is made mutable (and the update discarded) so that models with batch
        # norm can be applied without passing running statistics during meta-training.
        mutable = ["bn_obs"] if collect_bn_stats else []
        if batch_stats is None:
            mutable.append("batch_stats")
        out, updates = model.apply(variables, x, mutable=mutable, **kwargs)
        value, aux = losses.prediction_loss(out, y, loss)
        if collect_bn_stats:
            aux["bn_stats"] = updates.get("bn_obs", {})
        return (value, aux) if has_aux else value

    return loss_fn


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
      >>> import maml_jax as mj
      >>> class Net(nnx.Module):
      ...     def __init__(self, rngs):
      ...         self.dense = nnx.Linear(4, 8, rngs=rngs)
      ...         self.norm = nnx.BatchNorm(8, rngs=rngs)
      ...         self.head = nnx.Linear(8, 3, rngs=rngs)
      ...     def __call__(self, x):
      ...         return self.head(jax.nn.relu(self.norm(self.dense(x))))
      >>> parts = nnx_model(Net(nnx.Rngs(0)))
      >>> parts.inner_loop_mask["norm"]["scale"], parts.inner_loop_mask["head"]["kernel"]
      (False, True)
      >>> lrs = mj.init_inner_lrs(parts.params, 1, 0.1, mask=parts.inner_loop_mask)
      >>> batch = (jnp.ones((6, 4)), jnp.arange(6) % 3)
      >>> loss, aux = jax.jit(parts.loss_fn)(parts.params, batch, 0)
      >>> sorted(aux)
      ['accuracy', 'bn_stats', 'label_errors']
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
    takes_step = _takes_argument(type(module).__call__, "step")

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

    mask = inner_loop_mask(params, stats)
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
      >>> params = {"w": jnp.ones((2, 1)), "b": jnp.zeros(1)}
      >>> loss_fn(params, (jnp.ones((3, 2)), jnp.full((3, 1), 2.0)), 0)
      (Array(0., dtype=float32), {})
    """
    losses.check_loss_name(loss)
    takes_step = _takes_argument(apply_fn, "step")

    def loss_fn(params, batch, step):
        x, y = batch
        out = apply_fn(params, x, step=step) if takes_step else apply_fn(params, x)
        return losses.prediction_loss(out, y, loss)

    return loss_fn


def _owns_batch_stats(batch_stats: Any, module_path: tuple) -> bool:
    """Whether the module at ``module_path`` holds arrays of its own in ``batch_stats``."""
    node = batch_stats
    for key in module_path:
        name = getattr(key, "key", getattr(key, "idx", key))
        if not isinstance(node, Mapping) or name not in node:
            return False
        node = node[name]
    return isinstance(node, Mapping) and any(not isinstance(v, Mapping) for v in node.values())


def _looks_like_norm(path: tuple, params: Any) -> bool:
    node = params
    for key in path[:-1]:
        node = node[getattr(key, "key", getattr(key, "idx", key))]
    return isinstance(node, Mapping) and set(node) == {"scale", "bias"}


def inner_loop_mask(params: Any, batch_stats: Any = None, *, only: str | None = None,
                    freeze: str | None = None) -> Any:
    """True for parameters the inner loop adapts: everything but batch-norm weights.

    The MAML++ reference meta-learns BN weights but leaves them out of the inner loop
    (``enable_inner_loop_optimizable_bn_params=False``). A parameter is a batch-norm weight
    when its module also owns batch statistics: an entry of the ``batch_stats`` collection
    at the same module path (``StepBatchNorm``, shared or per step, and a standard
    ``nn.BatchNorm``, whatever their names). Other normalisations (``LayerNorm``,
    ``GroupNorm``) have no batch statistics and are adapted.

    Args:
      params: the ``params`` collection, or the whole ``variables`` dict of ``model.init``
        (then its ``batch_stats`` collection is used).
      batch_stats: the model's ``batch_stats`` collection. Without it (and without a
        ``variables`` dict) the mask falls back to Conv4's names (``norm*`` modules) and
        raises if another module looks like a normalisation layer (a ``scale`` and a
        ``bias``), rather than adapt batch-norm weights silently.
      only: adapt only the top-level module of this name (its batch-norm weights still
        excluded). ``only="head"`` is ANIL (Raghu et al. 2020: the inner loop adapts the
        classifier alone; the body is meta-learned only); Conv4's and MLP's output layer
        is named ``head``.
      freeze: adapt everything but the top-level module of this name (and batch-norm
        weights). ``freeze="head"`` is BOIL (Oh et al. 2021: the inner loop adapts the body
        alone; the classifier is meta-learned only).

    Returns:
      A pytree of bools mirroring the params (for ``init_inner_lrs(mask=...)``).

    Raises:
      ValueError: a module ``only`` or ``freeze`` names that the params do not have, both
        given, and an unrecognised ``scale``/``bias`` module.

    Example:
      >>> from maml_jax import Conv4
      >>> variables = Conv4(num_classes=5).init(jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 1)))
      >>> mask = inner_loop_mask(variables)
      >>> bool(mask["norm0"]["scale"]), bool(mask["conv0"]["kernel"])
      (False, True)
      >>> anil = inner_loop_mask(variables, only="head")
      >>> bool(anil["conv0"]["kernel"]), bool(anil["head"]["kernel"])
      (False, True)
      >>> boil = inner_loop_mask(variables, freeze="head")
      >>> bool(boil["conv0"]["kernel"]), bool(boil["head"]["kernel"])
      (True, False)
    """
    if batch_stats is None and isinstance(params, Mapping) and "params" in params:
        params, batch_stats = params["params"], params.get("batch_stats", {})
    if only is not None and freeze is not None:
        raise ValueError("inner_loop_mask takes only= (ANIL) or freeze= (BOIL), not both")
    mask = _mask_without_batch_norm(params, batch_stats)
    name, keep = (only, True) if only is not None else (freeze, False)
    if name is None:
        return mask
    if not isinstance(params, Mapping) or name not in params:
        names = sorted(params) if isinstance(params, Mapping) else []
        which = "only" if only is not None else "freeze"
        raise ValueError(f"inner_loop_mask({which}={name!r}): the params have no top-level "
                         f"module {name!r}; they have {names}")
    off = lambda sub: jax.tree.map(lambda _: False, sub)
    return {m: (sub if (m == name) == keep else off(sub)) for m, sub in mask.items()}


def _mask_without_batch_norm(params: Any, batch_stats: Any) -> Any:
    if batch_stats is not None:
        return jax.tree_util.tree_map_with_path(
            lambda path, _: not _owns_batch_stats(batch_stats, path[:-1]), params)

    # Names only (the call of earlier versions): Conv4's batch norms are its norm* modules.
    def is_adapted(path, _):
        if any(str(getattr(k, "key", "")).startswith("norm") for k in path):
            return False
        if _looks_like_norm(path, params):
            raise ValueError(
                "inner_loop_mask cannot tell whether the scale/bias of module "
                f"{'/'.join(str(getattr(k, 'key', k)) for k in path[:-1])!r} belong to a batch "
                "norm (not adapted) or another normalisation (adapted): pass the model's "
                "batch_stats, or the whole variables dict of model.init")
        return True

    return jax.tree_util.tree_map_with_path(is_adapted, params)
