"""The losses a model's outputs are scored with, and the checks of their labels.

The model adapters (``maml_jax.model_adapters``) turn a model into the library's
``loss_fn(params, batch, step)`` with ``prediction_loss``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = ["LOSSES", "LABEL_ERRORS", "check_loss_name", "label_errors", "accuracy",
           "prediction_loss", "check_labels"]

LOSSES = ("cross_entropy", "mse")


def check_loss_name(loss: str) -> None:
    """Raises ``ValueError`` unless ``loss`` is one of ``LOSSES`` (before any tracing).

    Example:
      >>> check_loss_name("mse")
    """
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; expected one of {LOSSES}")


#: The aux entry in which a classification loss reports how many of its labels lie outside
#: ``[0, num_classes)``. Inside JAX such a label is no error: it gives a finite but wrong
#: loss (a negative label) or a NaN (one too large). ``outer_step`` skips a step whose
#: support or query batch has any, and ``check_finite`` names them.
LABEL_ERRORS = "label_errors"


def label_errors(labels: jax.Array, num_classes: int) -> jax.Array:
    """The number of ``labels`` outside ``[0, num_classes)``: an int32 scalar (traceable).

    It reads the labels only, so where nothing else uses the loss it is part of, XLA
    computes no forward pass for it.

    Example:
      >>> int(label_errors(jnp.array([0, 4, 5, -1]), 5))
      2
    """
    labels = jnp.asarray(labels)
    return jnp.sum((labels < 0) | (labels >= num_classes), dtype=jnp.int32)


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Fraction of ``argmax(logits) == labels``."""
    return jnp.mean((jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32))


def prediction_loss(outputs: jax.Array, labels: jax.Array, loss: str) -> tuple[jax.Array, dict]:
    """The batch-mean loss of a model's outputs, and its metrics.

    Labels are checked on static shapes and dtypes (at trace time, before anything
    compiles): ``"cross_entropy"`` wants integer class indices of shape
    ``outputs.shape[:-1]``; ``"mse"`` wants targets of the outputs' shape (no silent
    broadcasting of ``(k,)`` against ``(k, 1)``). Their values are checked on the device:
    ``"cross_entropy"``'s metrics are ``accuracy`` and ``LABEL_ERRORS`` (the labels outside
    the logits' classes, which make ``outer_step`` skip the step).

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
        return value, {"accuracy": accuracy(outputs, labels),
                       LABEL_ERRORS: label_errors(labels, out_shape[-1])}
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
