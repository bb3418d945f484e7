"""The per-task maths of MAML and MAML++: inner learning rates, adaptation, task loss.

Everything here is a pure function of pytrees. ``loss_fn(params, batch, step)`` is the
user's model loss; ``step`` is the inner-step index (an int32 scalar, traced inside
``lax.scan``) so that a model can select per-step batch-norm weights (MAML++ BNWB).

The loss contract is one thing everywhere (``adapt``, ``task_loss``, ``outer_step``,
``evaluate_tasks``): ``loss_fn`` returns either a scalar loss or a ``(scalar loss,
aux dict)`` pair; ``split_loss_output`` normalises both at trace time.

Indexing convention (the MAML++ reference code's): the support loss at inner step ``i``
and the query loss *after* update ``i`` both use ``step=i``; there are ``num_steps``
indices, ``0 .. num_steps - 1``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np

# chex's names for what the signatures take: nested containers of arrays (params, inner
# learning rates, batches) and arrays.
PyTree = chex.ArrayTree
LossFn = Callable[[PyTree, Any, chex.Array], Any]

__all__ = [
    "GRANULARITIES",
    "check_positive",
    "split_loss_output",
    "check_same_structure",
    "init_inner_lrs",
    "extend_inner_lrs",
    "clip_inner_grads",
    "inner_step",
    "adapt",
    "task_loss",
    "msl_weights",
    "final_step_weights",
]

GRANULARITIES = ("scalar", "layer_step", "parameter", "meta_sgd")


def _is_none(x: Any) -> bool:
    return x is None


def split_loss_output(out: Any) -> tuple[jax.Array, dict]:
    """Normalises what a ``loss_fn`` returned to ``(scalar loss, aux dict)``.

    Accepted: a scalar (aux is then ``{}``) or a ``(scalar, dict)`` pair. Checked on
    static shapes, so a wrong return value fails at trace time, before anything compiles.

    Raises:
      TypeError: naming what was returned otherwise (e.g. a per-example loss vector).

    Example:
      >>> split_loss_output(jnp.float32(1.0))
      (Array(1., dtype=float32), {})
    """
    if isinstance(out, (tuple, list)):
        if len(out) != 2 or not isinstance(out[1], Mapping):
            raise TypeError(
                "loss_fn must return a scalar loss or a (scalar loss, aux dict) pair; got a "
                f"{type(out).__name__} of {len(out)} items "
                f"({', '.join(type(o).__name__ for o in out)})")
        loss, aux = out
        aux = dict(aux)  # a fresh dict: callers pop entries (e.g. "bn_stats")
    else:
        loss, aux = out, {}
    if not hasattr(loss, "shape") and not isinstance(loss, (int, float)):
        raise TypeError(f"loss_fn must return a scalar loss (or (loss, aux dict)); got {loss!r}")
    if jnp.shape(loss) != ():
        raise TypeError(
            f"loss_fn must return a scalar loss, got an array of shape {jnp.shape(loss)}: "
            "reduce it over the batch (e.g. jnp.mean)")
    return loss, aux


def _loss_only(loss_fn: LossFn) -> LossFn:
    """``loss_fn`` reduced to its scalar loss (what ``jax.grad`` differentiates)."""
    return lambda params, batch, step: split_loss_output(loss_fn(params, batch, step))[0]


def _key_name(k: Any) -> str:
    for attr in ("key", "idx", "name"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def check_same_structure(tree: PyTree, reference: PyTree, what: str, reference_what: str,
                         *, none_is_leaf: bool = False) -> None:
    """Raises a ``ValueError`` naming the first path where ``tree`` and ``reference`` differ.

    Args:
      tree: the pytree to check (only its structure counts).
      reference: the pytree it must match.
      what: the name of ``tree`` in the message (e.g. ``"mask"``).
      reference_what: the name of ``reference`` in the message (e.g. ``"params"``).
      none_is_leaf: treat ``None`` as a leaf (inner learning rates of parameters that are
        not adapted) instead of an empty subtree.

    Example:
      >>> check_same_structure({"w": True}, {"w": jnp.zeros(2)}, "mask", "params")
    """
    is_leaf = _is_none if none_is_leaf else None
    if jax.tree.structure(tree, is_leaf=is_leaf) == jax.tree.structure(reference, is_leaf=is_leaf):
        return
    paths = lambda t: ["/".join(_key_name(k) for k in path) for path, _ in
                       jax.tree_util.tree_flatten_with_path(t, is_leaf=is_leaf)[0]]
    mine, theirs = paths(tree), paths(reference)
    only_mine = [p for p in mine if p not in set(theirs)]
    only_theirs = [p for p in theirs if p not in set(mine)]
    if only_theirs:
        detail = f"{reference_what} has {only_theirs[0]!r} which {what} lacks"
    elif only_mine:
        detail = f"{what} has {only_mine[0]!r} which {reference_what} lacks"
    else:
        detail = "the same paths in different container types"
    raise ValueError(f"{what} must have the structure of {reference_what}: {detail} "
                     f"({len(only_theirs)} missing, {len(only_mine)} extra)")


def check_positive(value: Any, name: str) -> float:
    """``value`` as a float if it is a finite number > 0, else a ``ValueError`` naming it.

    A learning rate of 0 does nothing and a negative one ascends the loss; both are
    mistakes, caught where the value is given rather than as a run that never learns.

    Example:
      >>> check_positive(-0.1, "init_lr")
      Traceback (most recent call last):
      ...
      ValueError: init_lr must be a finite number > 0, got -0.1
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) \
            or not math.isfinite(value) or not value > 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def _check_num_steps(num_steps: Any) -> int:
    if isinstance(num_steps, bool) or not isinstance(num_steps, int):
        raise TypeError("num_steps must be a Python int (it fixes the scan length), "
                        f"got {num_steps!r}")
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    return num_steps


def init_inner_lrs(
    params: PyTree,
    num_steps: int,
    init_lr: float,
    granularity: str = "layer_step",
    mask: PyTree | None = None,
) -> PyTree:
    """Creates the learnable inner learning rates, a pytree mirroring ``params``.

    Leaf shapes by ``granularity``:

    * ``"scalar"``: ``()`` per tensor, used at every step (plain MAML's fixed alpha; if
      meta-learned, each tensor's copy is learned separately).
    * ``"layer_step"``: ``(num_steps,)``, one alpha per tensor per step (MAML++ LSLR).
    * ``"parameter"``: ``(num_steps, *p.shape)``, one alpha per parameter per step
      (Meta-SGD's per-parameter alpha, made per step).
    * ``"meta_sgd"``: ``(1, *p.shape)``, one alpha per parameter shared by every step
      (Meta-SGD, Li et al. 2017). A leading axis of 1 means "the same at every step".

    Args:
      params: the model parameters (any pytree of arrays).
      num_steps: number of inner steps the rates are for (>= 1).
      init_lr: the initial value of every rate, a finite number > 0.
      granularity: one of ``GRANULARITIES``.
      mask: optional pytree of bools mirroring ``params``; ``False`` leaves get ``None``
        instead of a rate, which means "not updated in the inner loop" (the MAML++
        reference leaves batch-norm weights out of the inner loop by default).

    Returns:
      The inner learning rates, float32, with ``None`` where ``mask`` is False.

    Example:
      >>> lrs = init_inner_lrs({"w": jnp.zeros((3, 2))}, 5, 0.1, "layer_step")
      >>> lrs["w"].shape
      (5,)
    """
    num_steps = _check_num_steps(num_steps)
    if granularity not in GRANULARITIES:
        raise ValueError(f"unknown granularity {granularity!r}; expected one of {GRANULARITIES}")
    check_positive(init_lr, "init_lr (the initial inner learning rate)")

    def make(p):
        p = jnp.asarray(p)
        if granularity == "scalar":
            shape = ()
        elif granularity == "layer_step":
            shape = (num_steps,)
        elif granularity == "meta_sgd":
            shape = (1, *p.shape)
        else:
            shape = (num_steps, *p.shape)
        return jnp.full(shape, init_lr, dtype=jnp.float32)

    if mask is None:
        return jax.tree.map(make, params)
    check_same_structure(mask, params, "mask", "params")
    return jax.tree.map(lambda p, m: make(p) if m else None, params, mask)


def extend_inner_lrs(inner_lrs: PyTree, num_steps: int) -> PyTree:
    """Pads or truncates per-step rates to ``num_steps`` steps by repeating the last step.

    Used to evaluate a model meta-trained with N inner steps after more than N steps.

    Example:
      >>> extend_inner_lrs({"w": jnp.array([0.1, 0.2])}, 4)["w"]
      Array([0.1, 0.2, 0.2, 0.2], dtype=float32)
    """
    num_steps = _check_num_steps(num_steps)

    def ext(lr):
        if lr is None or lr.ndim == 0:
            return lr
        n = lr.shape[0]
        if n >= num_steps:
            return lr[:num_steps]
        tail = jnp.repeat(lr[-1:], num_steps - n, axis=0)
        return jnp.concatenate([lr, tail], axis=0)

    return jax.tree.map(ext, inner_lrs, is_leaf=_is_none)


def _per_step_lrs(params: PyTree, inner_lrs: PyTree, num_steps: int) -> PyTree:
    """Gives every rate a leading step axis of length ``num_steps`` (for ``lax.scan``)."""
    try:
        check_same_structure(inner_lrs, params, "inner_lrs", "params", none_is_leaf=True)
    except ValueError as e:
        raise ValueError(f"{e}; inner_lrs must mirror params, with None for parameters "
                         "that are not adapted") from None

    def stack(lr, p):
        if lr is None:
            return None
        lr = jnp.asarray(lr)
        p = jnp.asarray(p)
        if lr.ndim == 0:
            return jnp.broadcast_to(lr, (num_steps,))
        if lr.ndim > 1 and lr.shape[0] == 1:   # "meta_sgd": one rate per weight, every step
            lr = jnp.broadcast_to(lr, (num_steps, *lr.shape[1:]))
        if lr.shape[0] != num_steps:
            raise ValueError(
                f"inner learning rate of shape {lr.shape} has {lr.shape[0]} steps but "
                f"num_steps={num_steps}; to adapt with another number of steps pass "
                f"extend_inner_lrs(inner_lrs, {num_steps}), which repeats the last step's "
                "rates"
            )
        if lr.ndim > 1 and lr.shape[1:] != p.shape:
            raise ValueError(
                f"per-parameter inner learning rate of shape {lr.shape} does not match "
                f"its parameter of shape {p.shape} (expected {(num_steps, *p.shape)})"
            )
        return lr

    return jax.tree.map(stack, inner_lrs, params, is_leaf=_is_none)


def _sgd_update(params: PyTree, grads: PyTree, lrs_t: PyTree) -> PyTree:
    """``p - lr * g`` where a rate exists; parameters with a ``None`` rate stay as they are."""
    return jax.tree.map(
        lambda lr, p, g: p if lr is None else p - lr.astype(p.dtype) * g,
        lrs_t,
        params,
        grads,
        is_leaf=_is_none,
    )


def _check_grad_clip(grad_clip: Any, name: str = "grad_clip") -> None:
    if grad_clip is None:
        return
    if isinstance(grad_clip, bool) or not isinstance(grad_clip, (int, float)) \
            or not grad_clip > 0:
        raise ValueError(f"{name} (the inner-gradient clip) must be a number > 0 or None, "
                         f"got {grad_clip!r}")


def clip_inner_grads(grads: PyTree, lrs_t: PyTree, max_norm: float | None) -> PyTree:
    """Scales a task's inner gradient to global norm at most ``max_norm``.

    The norm is over the adapted parameters only (those with a rate in ``lrs_t``); the
    scale ``max_norm / max(norm, max_norm)`` is differentiated through (second order), and
    an all-zero gradient stays zero without a NaN meta-gradient. With a bounded gradient an
    inner step moves each weight by at most ``rate * max_norm``, so the inner loop cannot
    blow up on a task where the loss is too curved for its rates (docs/results.md,
    "Learned rates: divergence of the rate updates"). The reference code does not clip:
    ``None`` returns ``grads`` unchanged.

    Example:
      >>> clip_inner_grads({"w": jnp.array([3.0, 4.0])}, {"w": 0.1}, 1.0)["w"]
      Array([0.6, 0.8], dtype=float32)
    """
    if max_norm is None:
        return grads
    adapted = [g for lr, g in zip(jax.tree.leaves(lrs_t, is_leaf=_is_none),
                                   jax.tree.leaves(grads), strict=True) if lr is not None]
    if not adapted:
        return grads
    # At least float32 (a bfloat16 model's squared norm would lose the small leaves).
    sq = sum(jnp.sum(jnp.square(g.astype(jnp.promote_types(g.dtype, jnp.float32))))
             for g in adapted)
    # Double where: sqrt's derivative at 0 is infinite, so the untaken branch must not see 0.
    norm = jnp.where(sq > 0, jnp.sqrt(jnp.where(sq > 0, sq, 1.0)), 0.0)
    scale = max_norm / jnp.maximum(norm, max_norm)
    return jax.tree.map(lambda g: g * scale.astype(g.dtype), grads)


def inner_step(
    loss_fn: LossFn,
    params: PyTree,
    lrs_t: PyTree,
    support: Any,
    step: jax.Array | int,
    *,
    first_order: bool = False,
    grad_clip: float | None = None,
) -> tuple[PyTree, jax.Array]:
    """One inner SGD step on the support set: ``params - lr_t * grad``.

    Args:
      loss_fn: ``loss_fn(params, batch, step) -> scalar`` or ``(scalar, aux dict)``.
      params: current (fast) parameters.
      lrs_t: this step's rates: a pytree mirroring params with leaves of shape ``()`` or
        ``p.shape`` (or ``None`` for parameters not adapted).
      support: the support batch passed to ``loss_fn``.
      step: the inner-step index given to ``loss_fn``.
      first_order: if True the inner gradient is treated as a constant (FOMAML); the rates
        still receive meta-gradients, as in the MAML++ reference.
      grad_clip: clip the inner gradient to this global norm (``clip_inner_grads``);
        None (the reference code) does not clip.

    Returns:
      ``(new_params, support_loss)``.

    Example:
      >>> loss = lambda p, b, s: jnp.sum((p["w"] * b) ** 2)
      >>> new, l = inner_step(loss, {"w": jnp.ones(2)}, {"w": jnp.array(0.1)}, jnp.ones(2), 0)
      >>> new["w"], l          # w - 0.1 * 2 w
      (Array([0.8, 0.8], dtype=float32), Array(2., dtype=float32))
    """
    _check_grad_clip(grad_clip)
    loss, grads = jax.value_and_grad(_loss_only(loss_fn))(params, support, step)
    if first_order:
        grads = jax.lax.stop_gradient(grads)
    grads = clip_inner_grads(grads, lrs_t, grad_clip)
    return _sgd_update(params, grads, lrs_t), loss


def _maybe_remat(fn, remat: bool):
    # jax.checkpoint drops the inner step's residuals after the forward pass and recomputes
    # them during the meta-backward pass: peak memory grows with one step, not all steps.
    return jax.checkpoint(fn) if remat else fn


def adapt(
    loss_fn: LossFn,
    params: PyTree,
    inner_lrs: PyTree,
    support: Any,
    *,
    num_steps: int,
    first_order: bool = False,
    grad_clip: float | None = None,
    remat: bool = False,
    unroll: int | bool = 1,
) -> PyTree:
    """Runs ``num_steps`` inner SGD steps on ``support`` (a ``lax.scan``).

    Args:
      loss_fn: ``loss_fn(params, batch, step) -> scalar`` or ``(scalar, aux dict)``.
      params: initial parameters (the meta-parameters).
      inner_lrs: rates from ``init_inner_lrs`` (leaves ``()``, ``(num_steps,)``,
        ``(num_steps, *p.shape)`` or ``(1, *p.shape)`` for every step; ``None`` leaves are
        not adapted).
      support: the support batch.
      num_steps: number of inner steps (static Python int >= 1).
      first_order: stop gradients through the inner-loop gradients.
      grad_clip: clip each inner gradient to this global norm (``clip_inner_grads``).
      remat: rematerialise each inner step in the backward pass (``jax.checkpoint``).
      unroll: ``lax.scan`` unroll factor.

    Returns:
      The adapted parameters.

    Example:
      >>> loss = lambda p, b, s: jnp.mean((b[0] * p["w"] - b[1]) ** 2)
      >>> p = adapt(loss, {"w": jnp.zeros(())}, {"w": 0.1}, (jnp.ones(4), jnp.ones(4)),
      ...           num_steps=3)
    """
    num_steps = _check_num_steps(num_steps)
    lrs = _per_step_lrs(params, inner_lrs, num_steps)

    def body(p, xs):
        t, lrs_t = xs
        p, _ = inner_step(loss_fn, p, lrs_t, support, t, first_order=first_order,
                          grad_clip=grad_clip)
        return p, None

    body = _maybe_remat(body, remat)
    steps = jnp.arange(num_steps, dtype=jnp.int32)
    out, _ = jax.lax.scan(body, params, (steps, lrs), unroll=unroll)
    return out


def task_loss(
    loss_fn: LossFn,
    params: PyTree,
    inner_lrs: PyTree,
    support: Any,
    query: Any,
    *,
    num_steps: int,
    step_weights: jax.Array,
    first_order: bool = False,
    grad_clip: float | None = None,
    has_aux: bool = False,
    remat: bool = False,
    unroll: int | bool = 1,
    support_loss_fn: LossFn | None = None,
):
    """Adapts on ``support`` and returns the (multi-step) query loss of one task.

    ``per_step_query_losses[i]`` is the query loss after ``i + 1`` inner updates, evaluated
    with ``step=i``; ``loss = sum(step_weights * per_step_query_losses)``. MAML++'s
    multi-step loss uses ``msl_weights``; plain MAML is ``final_step_weights``.

    Args:
      loss_fn: ``loss_fn(params, batch, step) -> scalar`` or ``(scalar, aux dict)``.
      params: the meta-parameters.
      inner_lrs: inner learning rates mirroring params (see ``adapt``).
      support: support batch.
      query: query batch.
      num_steps: number of inner steps (static).
      step_weights: ``(num_steps,)`` weights of the per-step query losses.
      first_order: stop gradients through the inner-loop gradients.
      grad_clip: clip each inner gradient to this global norm (``clip_inner_grads``).
      has_aux: also return the query aux of every step, stacked along a leading step
        axis (``{}`` for a ``loss_fn`` returning a scalar). It selects the *output* form
        only: either kind of ``loss_fn`` works with either value.
      remat: rematerialise each inner step (saves memory in second-order MAML).
      unroll: ``lax.scan`` unroll factor.
      support_loss_fn: the objective of the inner steps, if not ``loss_fn`` (iMAML's
        proximal one: ``Algorithm.support_objective``); the query losses stay ``loss_fn``'s.

    Returns:
      ``(loss, per_step_query_losses)``, or with ``has_aux``
      ``(loss, (per_step_query_losses, per_step_query_aux))``.

    Example:
      >>> loss = lambda p, b, s: jnp.mean((b[0] * p["w"] - b[1]) ** 2)
      >>> batch = (jnp.ones(4), jnp.ones(4))
      >>> l, per_step = task_loss(loss, {"w": jnp.zeros(())}, {"w": 0.1}, batch, batch,
      ...                         num_steps=2, step_weights=msl_weights(0, 2, 10))
    """
    num_steps = _check_num_steps(num_steps)
    lrs = _per_step_lrs(params, inner_lrs, num_steps)
    step_weights = jnp.asarray(step_weights)
    if step_weights.shape != (num_steps,):
        raise ValueError(
            f"step_weights must have shape ({num_steps},) for num_steps={num_steps}, "
            f"got {step_weights.shape}"
        )

    inner_loss_fn = loss_fn if support_loss_fn is None else support_loss_fn

    def body(p, xs):
        t, lrs_t = xs
        p, _ = inner_step(inner_loss_fn, p, lrs_t, support, t, first_order=first_order,
                          grad_clip=grad_clip)
        q_loss, aux = split_loss_output(loss_fn(p, query, t))
        return p, (q_loss, aux if has_aux else None)

    body = _maybe_remat(body, remat)
    steps = jnp.arange(num_steps, dtype=jnp.int32)
    _, (per_step, aux) = jax.lax.scan(body, params, (steps, lrs), unroll=unroll)
    loss = jnp.sum(step_weights.astype(per_step.dtype) * per_step)
    if has_aux:
        return loss, (per_step, aux)
    return loss, per_step


def msl_weights(epoch: Any, num_steps: int, msl_epochs: int) -> jax.Array:
    """The MAML++ reference's annealed multi-step-loss weights for ``epoch``.

    With N = num_steps and E = msl_epochs: non-final weights
    ``max(1/N - epoch/(N*E), 0.03/N)``, final weight
    ``min(1/N + epoch*(N-1)/(N*E), 1 - (N-1)*0.03/N)``; from ``epoch >= E`` on, a one-hot on
    the last step (the reference then stops computing the intermediate query losses).
    ``epoch`` may be a traced value.

    Example:
      >>> msl_weights(1, 5, 10)
      Array([0.18, 0.18, 0.18, 0.18, 0.28], dtype=float32)
    """
    num_steps = _check_num_steps(num_steps)
    if msl_epochs < 1:
        raise ValueError(f"msl_epochs must be >= 1, got {msl_epochs}")
    n, e = float(num_steps), float(msl_epochs)
    epoch_f = jnp.asarray(epoch, dtype=jnp.float32)
    decay = 1.0 / n / e
    min_non_final = 0.03 / n
    non_final = jnp.maximum(1.0 / n - epoch_f * decay, min_non_final)
    final = jnp.minimum(1.0 / n + epoch_f * (n - 1.0) * decay, 1.0 - (n - 1.0) * min_non_final)
    weights = jnp.full((num_steps,), non_final, dtype=jnp.float32).at[-1].set(final)
    return jnp.where(epoch_f >= e, final_step_weights(num_steps), weights)


def final_step_weights(num_steps: int) -> jax.Array:
    """One-hot weights on the last inner step: plain MAML's outer loss."""
    num_steps = _check_num_steps(num_steps)
    return jnp.zeros((num_steps,), jnp.float32).at[-1].set(1.0)
