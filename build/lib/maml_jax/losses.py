"""Turning a Flax model into the ``loss_fn(params, batch, step)`` the library adapts."""

from __future__ import annotations

import inspect
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

__all__ = ["LOSSES", "make_loss_fn", "accuracy"]

LOSSES = ("cross_entropy", "mse")


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Fraction of ``argmax(logits) == labels``."""
    return jnp.mean((jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32))


def _accepts(module: nn.Module, name: str) -> bool:
    try:
        return name in inspect.signature(type(module).__call__).parameters
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
        (and ``"bn_stats"`` if ``collect_bn_stats``); else just the scalar loss.
      batch_stats: the model's ``batch_stats`` collection (per-step running statistics),
        needed when ``use_running_average``.
      use_running_average: normalise with running statistics (non-transductive eval).
        The statistics ``outer_step`` keeps are updated once per outer step from the
        query passes, not in every forward pass as in the MAML++ reference (see
        ``meta._update_running_stats``), so such numbers differ from the reference's.
      collect_bn_stats: put this batch's BN statistics into ``aux["bn_stats"]``.

    Returns:
      The loss function.

    Example:
      >>> from maml_jax import MLP
      >>> loss_fn = make_loss_fn(MLP(), "mse", has_aux=False)
    """
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; expected one of {LOSSES}")
    takes_step = _accepts(model, "step")
    takes_ra = _accepts(model, "use_running_average")
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
        aux = {}
        if loss == "cross_entropy":
            value = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(out, y))
            aux["accuracy"] = accuracy(out, y)
        else:
            value = jnp.mean(jnp.square(out - y))
        if collect_bn_stats:
            aux["bn_stats"] = updates.get("bn_obs", {})
        return (value, aux) if has_aux else value

    return loss_fn
