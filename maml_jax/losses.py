"""Turning a Flax model into the ``loss_fn(params, batch, step)`` the library adapts."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = ["LOSSES", "make_loss_fn", "accuracy", "prediction_loss", "check_labels",
           "check_loss_name", "takes_argument"]

LOSSES = ("cross_entropy", "mse")


def check_loss_name(loss: str) -> None:
    """Raises ``ValueError`` unless ``loss`` is one of ``LOSSES`` (before any tracing).

    Example:
      >>> check_loss_name("mse")
    """
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; expected one of {LOSSES}")


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Fraction of ``argmax(logits) == labels``."""
    return jnp.mean((jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32))


def prediction_loss(outputs: jax.Array, labels: jax.Array, loss: str) -> tuple[jax.Array, dict]:
    """The batch-mean loss of a model's outputs, and its metrics (``accuracy``).

    Labels are checked on static shapes and dtypes (at trace time, before anything
    compiles): ``"cross_entropy"`` wants integer class indices of shape
    ``outputs.shape[:-1]``; ``"mse"`` wants targets of the outputs' shape (no silent
    broadcasting of ``(k,)`` against ``(k, 1)``).

    Raises:
      TypeError, ValueError: naming the labels' problem.

    Example:
      >>> value, aux = prediction_loss(jnp.zeros((4, 3)), jnp.array([0, 1, 2, 0]),
      ...                              "cross_entropy")
    """
    check_loss_name(loss)
    out_shape, y_shape = jnp.shape(outputs), jnp.shape(labels)
    if loss == "cross_entropy":
        if not jnp.issubdtype(jnp.result_type(labels), jnp.integer):
            hint = (" (one-hot labels? pass the class indices, argmax over the last axis)"
                    if y_shape == out_shape else "")
            raise TypeError(f"cross_entropy labels must be integer class indices, got dtype "
                            f"{jnp.result_type(labels)} and shape {y_shape}{hint}")
        if y_shape != out_shape[:-1]:
            raise ValueError(f"cross_entropy labels must have shape {out_shape[:-1]} (the "
                             f"logits' {out_shape} without the class axis), got {y_shape}")
        value = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(outputs, labels))
        return value, {"accuracy": accuracy(outputs, labels)}
    if y_shape != out_shape:
        raise ValueError(f"mse targets must have the model outputs' shape {out_shape}, "
                         f"got {y_shape}")
    return jnp.mean(jnp.square(outputs - labels)), {}


def check_labels(labels: Any, num_classes: int, *, what: str = "labels") -> None:
    """Checks host class labels: integers in ``[0, num_classes)`` (not one-hot, not float).

    Out-of-range labels are not an error inside JAX: they give a silently wrong (or
    non-finite) loss, so check them on the host before meta-training.

    Args:
      labels: array of integer class indices (any shape).
      num_classes: the model's number of outputs.
      what: the name used in the message (e.g. ``"query labels"``).

    Raises:
      TypeError: non-integer labels. ValueError: labels outside ``[0, num_classes)``.

    Example:
      >>> check_labels(np.array([0, 4, 2]), num_classes=5)
    """
    arr = np.asarray(labels)
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{what} must be integer class indices, got dtype {arr.dtype}"
                        " (one-hot or float labels? pass the class indices)")
    if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
        raise ValueError(f"{what} must lie in [0, {num_classes}) for a model with "
                         f"{num_classes} outputs, got values in [{arr.min()}, {arr.max()}]")


def takes_argument(fn: Callable, name: str) -> bool:
    """Whether ``fn``'s signature has a parameter ``name`` (False if it has none to read).

    The model adapters pass ``step=`` / ``use_running_average=`` only to models that take
    them.

    Example:
      >>> takes_argument(lambda params, x, step: x, "step")
      True
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
      >>> loss_fn = make_loss_fn(MLP(), "mse", has_aux=False)
    """
    check_loss_name(loss)
    takes_step = takes_argument(type(model).__call__, "step")
    takes_ra = takes_argument(type(model).__call__, "use_running_average")
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
        value, aux = prediction_loss(out, y, loss)
        if collect_bn_stats:
            aux["bn_stats"] = updates.get("bn_obs", {})
        return (value, aux) if has_aux else value

    return loss_fn
