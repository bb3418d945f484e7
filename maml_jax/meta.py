"""The outer (meta) step: a batch of tasks, the mean task loss, one optax update.

State is one ``MetaState`` NamedTuple of arrays; static choices live in the frozen
``MetaConfig``. ``outer_step`` is pure; ``jit_outer_step`` is it under one ``jax.jit`` with
the state donated. ``train_steps`` runs several outer steps per host call
(``lax.scan``), drawing each step's tasks on the device from
``jax.random.fold_in(state.rng, state.step)`` so a resumed run draws the same tasks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable, Mapping
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from maml_jax import core
from maml_jax.algorithms import MAML, Algorithm
from maml_jax.algorithms.base import validate_tasks

# The meta-optimizer lives in its own module; its public names stay importable from here.
from maml_jax.meta_optimizer import (
    INNER_LR_UPDATES,
    PER_WEIGHT_INNER_GRAD_CLIP,
    RATE_UPDATE_PRESETS,
    default_inner_grad_clip,
    default_rate_update,
    inner_grad_clip_for,
    make_meta_optimizer,
    meta_lr_schedule,
    rate_update_preset,
)
from maml_jax.task_batching import TASK_BATCHING, check_task_groups

PyTree = chex.ArrayTree

__all__ = [
    "MetaConfig",
    "MetaState",
    "init_meta_state",
    "meta_lr_schedule",
    "make_meta_optimizer",
    "INNER_LR_UPDATES",
    "RATE_UPDATE_PRESETS",
    "rate_update_preset",
    "default_rate_update",
    "PER_WEIGHT_INNER_GRAD_CLIP",
    "default_inner_grad_clip",
    "inner_grad_clip_for",
    "LR_SCHEDULES",
    "OuterLoop",
    "make_outer_loop",
    "phase",
    "meta_gradient",
    "outer_step",
    "OUTER_STEP_STATIC",
    "jit_outer_step",
    "train_steps",
    "evaluate_tasks",
    "jit_evaluate_tasks",
    "validate_tasks",
    "check_finite",
    "tree_all_finite",
    "NonFiniteLossError",
    "InvalidLabelsError",
    "SUPPORT_LABEL_ERRORS",
    "QUERY_LABEL_ERRORS",
]

@dataclasses.dataclass(frozen=True)
class MetaConfig:
    """Static choices of meta-training (hashable: it is a ``jax.jit`` static argument).

    Attributes:
      num_inner_steps: inner SGD steps per task during meta-training.
      msl: MAML++ multi-step loss (annealed by ``msl_weights``); False = final step only.
      msl_epochs: epochs over which the MSL weights anneal towards the last step.
      first_order: first-order MAML throughout.
      first_order_epochs: derivative-order annealing (DA): first order while
        ``epoch < first_order_epochs``, then second order. 0 = second order from the start.
        The reference code's ``first_order_to_second_order_epoch = X`` means first order
        while ``epoch <= X``: it is ``first_order_epochs = X + 1`` here (its -1, second
        order throughout, is 0 here).
      learn_inner_lrs: meta-learn the inner learning rates (LSLR / Meta-SGD).
      iterations_per_epoch: outer steps per epoch (the reference's 500).
      task_batching: ``"vmap"`` over tasks, ``"map"`` (``lax.map``: one task after
        another), or ``"auto"``: ``"map"`` on the CPU backend when the model's forward pass
        contains a convolution (``lax.conv_general_dilated``, e.g. ``nn.Conv``), else
        ``"vmap"``. On CPU, ``vmap`` turns convolutions with per-task weights into grouped
        convolutions that XLA:CPU runs >30x slower (a user's convnet meta-trains about 4x
        faster there with ``"map"``); Conv4's default ``conv_impl="auto"`` avoids them
        (im2col + batched matmul), so ``"auto"`` keeps ``vmap`` for it, the fastest choice
        on every backend (docs/performance.md). The check traces the forward pass once
        more at compile time; it costs nothing in the compiled step.
      task_groups: split a step's tasks into this many groups, each batched as
        ``task_batching`` says, computed as independent parts of the step (the same
        values, up to rounding): XLA:CPU's runtime runs them at the same time on different
        cores, which its single batched computation leaves partly idle. ``2`` made the
        Conv4 step 3-12 % faster on a 2-core CPU, for 1.4-1.9x the compile time
        (docs/performance.md); 1 (the default) keeps one batch. Not measured on a GPU.
        Ignored on a mesh of devices (``task_sharding``), which splits the tasks
        itself.
      remat: rematerialise each inner step (``jax.checkpoint``) to save memory.
      unroll: ``lax.scan`` unroll factor of the inner loop (an int, or True for a full
        unroll), or ``"auto"``: ``min(num_inner_steps, 5)`` on CPU (the second-order Conv4
        step runs 2-3x faster there unrolled; capped to bound the compile time), 1 elsewhere
        and whenever ``remat`` is on.
      bn_momentum: momentum of the per-step BN running statistics (torch convention).
      skip_nonfinite: keep the old state after a bad step: a non-finite loss or gradient,
        or labels outside the model's classes (``check_finite`` on the host then raises,
        naming why; no NaN ever reaches a checkpoint).
      inner_grad_clip: clip every inner gradient of a task to this global norm
        (``core.clip_inner_grads``); None (the reference code) does not clip. Evaluation
        must adapt the same way: pass it to ``evaluate_tasks``.
      algorithm: the meta-learning algorithm (``maml_jax.algorithms``): ``MAML()`` (the
        default: MAML and MAML++, whose options are the fields above) or another
        ``Algorithm``, e.g. ``Reptile()``. ``msl``, ``msl_epochs``, ``first_order``,
        ``first_order_epochs`` and ``learn_inner_lrs`` are MAML's; the other fields are
        the loop's, shared by every algorithm.
    """

    num_inner_steps: int = 5
    msl: bool = True
    msl_epochs: int = 10
    first_order: bool = False
    first_order_epochs: int = 0
    learn_inner_lrs: bool = True
    iterations_per_epoch: int = 500
    task_batching: str = "auto"
    task_groups: int = 1
    remat: bool = False
    unroll: int | bool | str = "auto"
    bn_momentum: float = 0.1
    skip_nonfinite: bool = True
    inner_grad_clip: float | None = None
    algorithm: Algorithm = dataclasses.field(default_factory=MAML)

    def __post_init__(self):
        if not isinstance(self.algorithm, Algorithm):
            raise ValueError("algorithm must be a maml_jax.algorithms Algorithm (with name, "
                             "support_objective, phase and meta_gradient; by name: "
                             f"maml_jax.make_algorithm), got {self.algorithm!r}")
        if isinstance(self.num_inner_steps, bool) or not isinstance(self.num_inner_steps, int) \
                or self.num_inner_steps < 1:
            raise ValueError(f"num_inner_steps must be an int >= 1, got {self.num_inner_steps!r}")
        if self.msl_epochs < 1:
            raise ValueError(f"msl_epochs must be >= 1, got {self.msl_epochs}")
        if self.iterations_per_epoch < 1:
            raise ValueError(f"iterations_per_epoch must be >= 1, got {self.iterations_per_epoch}")
        if isinstance(self.unroll, str) and self.unroll != "auto":
            raise ValueError(f"unroll must be an int, a bool or 'auto', got {self.unroll!r}")
        core._check_grad_clip(self.inner_grad_clip, "inner_grad_clip")
        if self.task_batching not in TASK_BATCHING:
            raise ValueError(f"unknown task_batching {self.task_batching!r}; "
                             f"expected {TASK_BATCHING}")
        check_task_groups(self.task_groups)


class MetaState(NamedTuple):
    """Everything that changes during meta-training.

    Attributes:
      step: int32 count of outer steps taken.
      meta_params: ``{"params": model params, "inner_lrs": inner learning rates}``.
      opt_state: the optax state of ``meta_params``.
      model_state: non-learned model state (per-step BN running statistics; ``{}`` if none).
      rng: the run's root PRNG key; step ``t`` uses ``fold_in(rng, t)``.
    """

    step: jax.Array
    meta_params: PyTree
    opt_state: PyTree
    model_state: PyTree
    rng: chex.PRNGKey


class NonFiniteLossError(FloatingPointError):
    """Raised on the host when an outer step produced a non-finite loss or gradient."""


class InvalidLabelsError(ValueError):
    """Raised on the host when an outer step's batch held labels outside the model's
    classes (the step was skipped)."""


#: ``outer_step``'s metrics: the support / query labels outside the model's classes.
SUPPORT_LABEL_ERRORS = "support_label_errors"
QUERY_LABEL_ERRORS = "query_label_errors"


def init_meta_state(
    params: PyTree,
    inner_lrs: PyTree,
    optimizer: optax.GradientTransformation,
    rng: chex.PRNGKey,
    model_state: PyTree | None = None,
) -> MetaState:
    """Builds the initial ``MetaState`` from the caller's parameters, rates and key.

    The state holds copies: ``jit_outer_step`` and ``jit_train_steps`` donate the state
    they are given (its buffers are reused for the new state), and that never reaches the
    arrays passed here (an NNX module's params, ``model.init``'s variables, the key stay
    usable). Use the state each step returns from then on.

    Args:
      params: the model's parameters (a pytree of arrays).
      inner_lrs: the inner learning rates (``init_inner_lrs``), mirroring ``params``.
      optimizer: the meta-optimizer (``make_meta_optimizer``).
      rng: the run's root key; outer step ``t`` draws from ``fold_in(rng, t)``.
      model_state: non-learned model state (batch-norm running statistics), or None.

    Example:
      >>> params = {"w": jnp.zeros(3)}
      >>> state = init_meta_state(params, core.init_inner_lrs(params, 1, 0.01, "scalar"),
      ...                         optax.adam(1e-3), jax.random.PRNGKey(0))
    """
    meta_params = {"params": params, "inner_lrs": inner_lrs}
    state = MetaState(
        step=jnp.zeros((), jnp.int32),
        meta_params=meta_params,
        opt_state=optimizer.init(meta_params),
        model_state={} if model_state is None else model_state,
        rng=rng,
    )
    # The state owns every array it holds: jit_outer_step and jit_train_steps donate
    # (delete) the state they are given, and the caller's arrays (an NNX module's params,
    # a linen variables dict, a key) must outlive that. One copy, once, here; an optimizer
    # whose state refers to the params (a lookahead's slow weights) gets its own copy too.
    return jax.tree.map(_own_copy, state)


def _own_copy(x: Any) -> jax.Array:
    """A new buffer with ``x``'s value (and sharding, for a ``jax.Array``)."""
    return jnp.array(x, copy=True)


#: ``make_outer_loop``'s meta learning rate schedules.
LR_SCHEDULES = ("constant", "cosine")


class OuterLoop(NamedTuple):
    """What ``outer_step`` and ``jit_train_steps`` take besides the state, the loss and
    the tasks (``make_outer_loop``).

    Attributes:
      config: the static ``MetaConfig``.
      optimizer: Adam on ``{"params", "inner_lrs"}`` (``make_meta_optimizer``).
      meta_lr: the meta learning rate as a function of the outer step count: the schedule
        the optimizer follows (for logs).
      rate_update: the ``RATE_UPDATE_PRESETS`` name the optimizer moves the inner rates
        with (``"auto"`` resolved).
    """

    config: MetaConfig
    optimizer: optax.GradientTransformation
    meta_lr: Callable[[Any], Any]
    rate_update: str


def make_outer_loop(
    *,
    lr_granularity: str = "layer_step",
    num_inner_steps: int = 5,
    msl: bool = True,
    msl_epochs: int = 10,
    first_order: bool = False,
    first_order_epochs: int = 0,
    learn_inner_lrs: bool = True,
    meta_lr: float = 1e-3,
    lr_schedule: str = "constant",
    min_meta_lr: float = 1e-5,
    num_epochs: int | None = None,
    iterations_per_epoch: int = 500,
    clip_value: float | None = None,
    rate_update: str = "auto",
    inner_grad_clip: float | str | None = "auto",
    task_batching: str = "auto",
    task_groups: int = 1,
    remat: bool = False,
    unroll: int | bool | str = "auto",
    algorithm: Algorithm | None = None,
) -> OuterLoop:
    """The ``MetaConfig``, optimizer and meta learning rate of one meta-learner, from the
    settings every entry point shares (the experiment configs' keys, the facade's arguments).

    Resolves the ``"auto"`` settings that depend on the rates' granularity:
    ``rate_update`` (``rate_update_preset``) and ``inner_grad_clip``
    (``inner_grad_clip_for``). The other arguments are ``MetaConfig``'s and
    ``make_meta_optimizer``'s.

    Args:
      lr_granularity: the granularity of the inner rates (``GRANULARITIES``).
      num_inner_steps: ``MetaConfig.num_inner_steps``.
      msl: ``MetaConfig.msl``.
      msl_epochs: ``MetaConfig.msl_epochs``.
      first_order: ``MetaConfig.first_order``.
      first_order_epochs: ``MetaConfig.first_order_epochs``.
      learn_inner_lrs: ``MetaConfig.learn_inner_lrs``.
      iterations_per_epoch: ``MetaConfig.iterations_per_epoch``.
      task_batching: ``MetaConfig.task_batching``.
      task_groups: ``MetaConfig.task_groups``.
      remat: ``MetaConfig.remat``.
      unroll: ``MetaConfig.unroll``.
      algorithm: ``MetaConfig.algorithm`` (None: ``MAML()``).
      meta_lr: the meta learning rate (the initial one under ``"cosine"``).
      lr_schedule: ``"constant"`` or ``"cosine"`` (MAML++ CA: ``meta_lr_schedule`` from
        ``meta_lr`` to ``min_meta_lr`` over ``num_epochs``, per epoch as the reference).
      min_meta_lr: the cosine schedule's final rate.
      num_epochs: the length of the cosine schedule (required for ``"cosine"``).
      clip_value: element-wise meta-gradient clipping (None: none).
      rate_update: a ``RATE_UPDATE_PRESETS`` name or ``"auto"``.
      inner_grad_clip: a number > 0, None (no clip) or ``"auto"``.

    Raises:
      ValueError: naming the first bad setting (before anything is traced).

    Example:
      >>> loop = make_outer_loop(lr_granularity="meta_sgd", num_inner_steps=1)
      >>> loop.config.inner_grad_clip, loop.config.msl, loop.rate_update
      (100.0, True, 'log_10x')
      >>> cosine = make_outer_loop(lr_schedule="cosine", num_epochs=100)
      >>> [round(float(cosine.meta_lr(step)), 6) for step in (0, 499, 50 * 500, 100 * 500)]
      [0.001, 0.001, 0.000505, 1e-05]
    """
    rate_kwargs = rate_update_preset(rate_update, lr_granularity)  # checks both names
    if rate_update == "auto":
        rate_update = default_rate_update(lr_granularity)
    core.check_positive(meta_lr, "meta_lr (the meta learning rate)")
    config = MetaConfig(
        num_inner_steps=num_inner_steps, msl=msl, msl_epochs=msl_epochs,
        first_order=first_order, first_order_epochs=first_order_epochs,
        learn_inner_lrs=learn_inner_lrs, iterations_per_epoch=iterations_per_epoch,
        task_batching=task_batching, task_groups=task_groups, remat=remat, unroll=unroll,
        inner_grad_clip=inner_grad_clip_for(inner_grad_clip, lr_granularity),
        algorithm=MAML() if algorithm is None else algorithm)
    if lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"unknown lr_schedule {lr_schedule!r}; expected one of {LR_SCHEDULES}")
    if lr_schedule == "cosine":
        if num_epochs is None:
            raise ValueError("lr_schedule='cosine' needs num_epochs (the schedule's length)")
        learning_rate = meta_lr_schedule(meta_lr, min_meta_lr, num_epochs, iterations_per_epoch)
        schedule = learning_rate
    else:
        learning_rate = float(meta_lr)
        schedule = lambda count: learning_rate
    optimizer = make_meta_optimizer(learning_rate, clip_value=clip_value, **rate_kwargs)
    return OuterLoop(config, optimizer, schedule, rate_update)


def phase(config: MetaConfig, epoch: int) -> Hashable:
    """The static phase of ``config.algorithm`` for an epoch: what ``outer_step`` and
    ``train_steps`` take as ``phase``. MAML's is the pair ``(first_order, msl)`` (the DA
    and MSL schedule, ``MAML.phase``).

    Example:
      >>> phase(MetaConfig(first_order_epochs=2), 1)
      MAMLPhase(first_order=True, msl=True)
    """
    return config.algorithm.phase(config, epoch)


def tree_all_finite(tree: PyTree) -> jax.Array:
    """Whether every array of a pytree is finite: a boolean scalar array (traceable).

    Example:
      >>> bool(tree_all_finite({"a": jnp.ones(2), "b": jnp.array([1.0, jnp.nan])}))
      False
    """
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def meta_gradient(
    meta_params: PyTree,
    tasks: tuple[Any, Any],
    *,
    step: Any,
    loss_fn: Callable,
    config: MetaConfig,
    phase: Hashable,
    task_sharding: Any = None,
) -> tuple[jax.Array, PyTree, dict[str, Any]]:
    """The meta loss of a batch of tasks and its gradient: what ``outer_step`` optimises,
    computed by ``config.algorithm``.

    Args:
      meta_params: ``{"params": ..., "inner_lrs": ...}`` (``MetaState.meta_params``).
      tasks: ``(support, query)``: batches (pytrees) with a leading task axis.
      step: the outer step number (may be traced); its epoch
        ``step // config.iterations_per_epoch`` sets the MSL weights.
      loss_fn: ``loss_fn(params, batch, step) -> loss`` or ``(loss, aux dict)`` (see
        ``outer_step``).
      config: static ``MetaConfig``.
      phase: static; the algorithm's phase for this step's epoch (``phase(config,
        epoch)``; MAML's is the pair ``(first_order, msl)``).
      task_sharding: static; a ``NamedSharding`` of the task axis over several devices
        (``maml_jax.parallel.task_sharding``), or None (one device).

    Returns:
      ``(loss, grads, extras)``: the mean task loss, its gradient mirroring
      ``meta_params``, and per-task ``extras``: ``per_step_loss`` ``(tasks, steps)`` (only
      the last entry is non-zero without MSL), ``aux`` (the final step's aux entries),
      ``bn_stats`` (the query passes' batch statistics, or None), ``bn_stats_every_step``
      (a Python bool: one entry per inner step in ``bn_stats``) and ``label_errors``
      (``(tasks, 2)``: support and query labels outside the model's classes, from the
      loss's ``LABEL_ERRORS`` aux entry; None for a loss that does not report them).

    Example:
      >>> import maml_jax as mj
      >>> model = mj.MLP(hidden=(8,))
      >>> params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 1)))["params"]
      >>> meta_params = {"params": params, "inner_lrs": mj.init_inner_lrs(params, 2, 0.01)}
      >>> tasks = mj.sample_sinusoid_tasks(jax.random.PRNGKey(1), 4, 5, 5)
      >>> loss, grads, extras = meta_gradient(
      ...     meta_params, tasks, step=0, loss_fn=mj.make_loss_fn(model, "mse"),
      ...     config=MetaConfig(num_inner_steps=2), phase=(False, True))
      >>> extras["per_step_loss"].shape, grads["inner_lrs"]["head"]["kernel"].shape
      ((4, 2), (2,))
    """
    return config.algorithm.meta_gradient(meta_params, tasks, step=step, loss_fn=loss_fn,
                                          config=config, phase=phase,
                                          task_sharding=task_sharding)


def outer_step(
    state: MetaState,
    tasks: tuple[Any, Any],
    *,
    loss_fn: Callable,
    optimizer: optax.GradientTransformation,
    config: MetaConfig,
    phase: Hashable,
    task_sharding: Any = None,
) -> tuple[MetaState, dict[str, jax.Array]]:
    """One meta-update on a batch of tasks: ``meta_gradient``, then the optimizer.

    Args:
      state: the current ``MetaState``.
      tasks: ``(support, query)``: batches (pytrees) with a leading task axis.
      loss_fn: ``loss_fn(params, batch, step) -> loss`` or ``(loss, aux)``; ``aux`` is a
        dict whose scalar entries are averaged into the metrics, and whose optional
        ``"bn_stats"`` entry (batch statistics of the layers that report them, a subtree of
        ``state.model_state`` minus the step axis) updates those running statistics.
      optimizer: an optax transformation of ``state.meta_params``.
      config: static ``MetaConfig``.
      phase: static; the algorithm's phase for the step's epoch (``phase(config, epoch)``;
        MAML's is ``(first_order, msl)``).
      task_sharding: static; see ``meta_gradient``.

    Returns:
      ``(new_state, metrics)``; metrics hold ``loss``, ``per_step_loss`` (query loss after
      each inner step, averaged over tasks; only the last entry is non-zero without the
      multi-step loss), ``finite``, ``grad_norm`` and the mean of every scalar aux entry (e.g.
      ``accuracy``, the final step's). A loss that reports ``LABEL_ERRORS`` (the library's
      classification losses do) adds ``support_label_errors`` and ``query_label_errors``:
      the labels of the batch outside the model's classes.

    A bad step (a non-finite loss or meta-gradient, or labels outside the model's classes)
    leaves the state as it was but for the step count, with ``config.skip_nonfinite``
    (the default); ``check_finite(metrics, step)`` on the host then raises, naming why.

    Example:
      >>> import maml_jax as mj
      >>> model = mj.MLP(hidden=(8,))
      >>> params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 1)))["params"]
      >>> loop = make_outer_loop(lr_granularity="layer_step", num_inner_steps=2)
      >>> state = init_meta_state(params, mj.init_inner_lrs(params, 2, 0.01, "layer_step"),
      ...                         loop.optimizer, jax.random.PRNGKey(1))
      >>> tasks = mj.sample_sinusoid_tasks(jax.random.PRNGKey(2), 4, 5, 5)
      >>> state, metrics = outer_step(state, tasks, loss_fn=mj.make_loss_fn(model, "mse"),
      ...                             optimizer=loop.optimizer, config=loop.config,
      ...                             phase=(False, True))
      >>> int(state.step), bool(metrics["finite"]), metrics["per_step_loss"].shape
      (1, True, (2,))
    """
    loss, grads, extras = meta_gradient(state.meta_params, tasks, step=state.step,
                                        loss_fn=loss_fn, config=config,
                                        phase=phase, task_sharding=task_sharding)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.meta_params)
    meta_params = optax.apply_updates(state.meta_params, updates)
    # Running statistics come from the query passes: under MSL every step's, otherwise only
    # the final step's (then only the last per-step slot moves). The reference also feeds
    # the support passes' statistics; see _update_running_stats.
    model_state = _update_running_stats(state.model_state, extras["bn_stats"],
                                        extras["bn_stats_every_step"], config.bn_momentum)

    finite = jnp.isfinite(loss) & tree_all_finite(grads)
    metrics = {"loss": loss, "per_step_loss": jnp.mean(extras["per_step_loss"], axis=0),
               "finite": finite, "grad_norm": optax.tree.norm(grads)}
    good = finite
    if extras["label_errors"] is not None:   # a classification loss that reports them
        errors = jnp.sum(extras["label_errors"], axis=0)
        metrics[SUPPORT_LABEL_ERRORS], metrics[QUERY_LABEL_ERRORS] = errors[0], errors[1]
        good = finite & (errors[0] == 0) & (errors[1] == 0)
    new_state = MetaState(state.step + 1, meta_params, opt_state, model_state, state.rng)
    if config.skip_nonfinite:
        old = state._replace(step=state.step + 1)
        new_state = jax.tree.map(lambda a, b: jnp.where(good, a, b), new_state, old)
    for k, v in extras["aux"].items():
        metrics[k] = jnp.mean(v)
    return new_state, metrics


def _update_running_stats(model_state, bn, every_step: bool, momentum: float):
    """EMA of the per-step running statistics with the task-averaged batch statistics.

    Once per outer step, from the query passes' statistics averaged over tasks (under MSL
    each step's query pass into its step slot; with the final-step loss the last slot
    only). This is not the reference code's update: its batch-norm layers move their
    running statistics in every forward pass (the support and query pass of every inner
    step of every task, each with the momentum). Training and the transductive evaluation
    (batch statistics, the reference's and our default) never read them; only
    non-transductive evaluation (``use_running_average=True``) does, and its numbers are
    therefore not comparable one-to-one with the reference's.

    Only layers that report their batch statistics (``StepBatchNorm`` via the ``bn_obs``
    collection, NNX ``BatchNorm`` through ``nnx_model``) are updated; the running
    statistics of other layers (a linen ``nn.BatchNorm``) keep their values.
    """
    if bn is None or not model_state:
        return model_state

    def observed(path):
        node = bn
        for key in path:
            name = getattr(key, "key", None)
            if not isinstance(node, Mapping) or name not in node:
                return None
            node = node[name]
        return node

    # bn leaves: (tasks, n, C) with MSL (one entry per step), (tasks, C) without.
    def upd(path, running):
        obs = observed(path)
        if obs is None:  # a layer that reports no statistics keeps its running ones
            return running
        obs = jnp.mean(obs, axis=0)
        if running.ndim == obs.ndim:  # per-step stats and observations, or shared and one
            return (1 - momentum) * running + momentum * obs
        if every_step:  # shared statistics, per-step observations: average over steps
            return (1 - momentum) * running + momentum * jnp.mean(obs, axis=0)
        # per-step statistics, final-step observation only
        return running.at[-1].set((1 - momentum) * running[-1] + momentum * obs)

    return jax.tree_util.tree_map_with_path(upd, model_state)


#: ``outer_step``'s static arguments (``jax.jit(outer_step, static_argnames=...)``).
OUTER_STEP_STATIC = ("loss_fn", "optimizer", "config", "phase", "task_sharding")

jit_outer_step = jax.jit(outer_step, static_argnames=OUTER_STEP_STATIC,
                         donate_argnames=("state",))
jit_outer_step.__doc__ = """``outer_step`` under ``jax.jit`` with the state donated.

Donation lets XLA write the new state into the old one's buffers: the state passed in is
deleted, so keep using the state each call returns. A state from ``init_meta_state`` owns
its arrays (it copies what it is given), so the caller's params, variables and key stay
usable. For a step that keeps its input state, jit ``outer_step`` yourself:
``jax.jit(outer_step, static_argnames=OUTER_STEP_STATIC)`` (what
``ModelAgnosticMetaLearning`` does).
"""


def train_steps(
    state: MetaState,
    data: Any,
    *,
    sample_tasks: Callable[[jax.Array, Any], tuple[Any, Any]],
    num_steps: int,
    loss_fn: Callable,
    optimizer: optax.GradientTransformation,
    config: MetaConfig,
    phase: Hashable,
    task_sharding: Any = None,
) -> tuple[MetaState, dict[str, jax.Array]]:
    """``num_steps`` outer steps in one ``lax.scan``, tasks drawn on the device.

    Step ``t`` draws ``sample_tasks(jax.random.fold_in(state.rng, t), data)``, so the tasks
    depend only on the root key and the step number (a resumed run draws the same ones,
    and so does a run sharded over devices with ``task_sharding``: see ``maml_jax.parallel``).

    Returns:
      ``(state, metrics)`` with metrics stacked along a leading axis of ``num_steps``.
    """
    def body(st, _):
        key = jax.random.fold_in(st.rng, st.step)
        tasks = sample_tasks(key, data)
        return outer_step(st, tasks, loss_fn=loss_fn, optimizer=optimizer, config=config,
                          phase=phase, task_sharding=task_sharding)

    return jax.lax.scan(body, state, None, length=num_steps)


def evaluate_tasks(
    loss_fn: Callable,
    params: PyTree,
    inner_lrs: PyTree,
    tasks: tuple[Any, Any],
    *,
    num_steps: int,
    batch_size: int | None = None,
    inner_grad_clip: float | None = None,
    algorithm: Algorithm | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Adapts to every task and reports the query loss after 0..num_steps inner steps.

    Args:
      loss_fn: ``loss_fn(params, batch, step) -> loss`` or ``(loss, aux dict)``.
      params: the meta-parameters.
      inner_lrs: the inner rates, for ``num_steps`` steps (as ``adapt`` wants them: to
        evaluate after more or fewer steps than meta-training took, pass
        ``extend_inner_lrs(inner_lrs, num_steps)``, which repeats the last step's rates).
      tasks: ``(support, query)`` with a leading task axis.
      num_steps: inner steps at evaluation.
      batch_size: tasks processed together (``lax.map`` with ``batch_size``); None = all.
      inner_grad_clip: the inner-gradient clip the model was meta-trained with
        (``MetaConfig.inner_grad_clip``); None = no clip.
      algorithm: the algorithm the model was meta-trained with (``MetaConfig.algorithm``):
        the inner steps descend its ``support_objective`` (iMAML's proximal objective; the
        plain loss for MAML and Reptile). None = the plain loss.

    Returns:
      ``(losses, aux)``: ``losses`` has shape ``(tasks, num_steps + 1)`` (index 0 is before
      adaptation), each aux entry likewise.
    """
    validate_tasks(tasks)
    n_steps = num_steps

    def one(s, q):
        l0, a0 = core.split_loss_output(loss_fn(params, q, jnp.int32(0)))
        a0 = {k: v for k, v in a0.items() if k != "bn_stats"}
        _, (per_step, aux) = core.task_loss(
            loss_fn, params, inner_lrs, s, q, num_steps=n_steps,
            step_weights=core.final_step_weights(n_steps), first_order=True,
            grad_clip=inner_grad_clip, has_aux=True,
            support_loss_fn=None if algorithm is None else algorithm.support_objective(
                loss_fn, params))
        aux = {k: v for k, v in aux.items() if k != "bn_stats"}
        losses = jnp.concatenate([l0[None], per_step])
        aux = jax.tree.map(lambda x0, xs: jnp.concatenate([x0[None], xs]), a0, aux)
        return losses, aux

    support, query = tasks
    num_tasks = jax.tree.leaves(support)[0].shape[0]
    bs = num_tasks if batch_size is None else min(batch_size, num_tasks)
    return jax.lax.map(lambda a: one(*a), (support, query), batch_size=bs)


jit_evaluate_tasks = jax.jit(evaluate_tasks, static_argnames=("loss_fn", "num_steps", "batch_size",
                                                             "inner_grad_clip", "algorithm"))


def check_finite(metrics: dict[str, Any], step: int) -> None:
    """Raises if an outer step was bad (and so skipped), naming why.

    Args:
      metrics: metrics of ``outer_step`` (or stacked metrics of ``train_steps``), on the
        host or the device.
      step: the outer step number of the first entry, for the message.

    Raises:
      InvalidLabelsError: a support or query batch held labels outside the model's classes
        (checked first: such labels also make the loss non-finite).
      NonFiniteLossError: a non-finite meta loss or meta-gradient.

    Example:
      >>> check_finite({"finite": np.array([True, True]), "loss": np.array([0.5, 0.4]),
      ...               "query_label_errors": np.array([0, 3])}, step=10)
      ... # doctest: +ELLIPSIS
      Traceback (most recent call last):
      maml_jax.meta.InvalidLabelsError: meta-training stopped at outer step 11: query labels ...
    """
    finite = np.atleast_1d(np.asarray(metrics["finite"]))
    for key, which in ((SUPPORT_LABEL_ERRORS, "support"), (QUERY_LABEL_ERRORS, "query")):
        if key not in metrics:
            continue
        errors = np.atleast_1d(np.asarray(metrics[key]))
        if errors.any():
            bad = int(np.argmax(errors > 0))
            raise InvalidLabelsError(
                f"meta-training stopped at outer step {step + bad}: {which} labels outside "
                f"the model's classes ({int(errors[bad])} of them; integer labels in "
                "[0, num_classes) expected); the step was skipped. Check the task sampler's "
                "labels.")
    if not finite.all():
        bad = int(np.argmin(finite))
        loss = np.atleast_1d(np.asarray(metrics["loss"]))[bad]
        raise NonFiniteLossError(
            f"meta-training stopped: non-finite meta loss ({loss}) or meta-gradient at outer "
            f"step {step + bad}; the state was not updated by that step. Lower the learning "
            "rates or check the data.")
