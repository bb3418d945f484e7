"""Builds the maml_jax MAML++ Conv4 outer step for the benchmarks (shared by bench.py,
explore_cpu.py and the equivalence test)."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from maml_jax import core, meta, model_adapters, models


@dataclasses.dataclass(frozen=True)
class Setting:
    name: str = "omniglot_5w1s"
    ways: int = 5
    shots: int = 1
    queries: int = 1          # query images per class
    meta_batch: int = 8
    inner_steps: int = 5
    image: int = 28
    channels: int = 1
    filters: int = 64
    first_order: bool = False
    msl: bool = True

    @property
    def tasks_per_step(self) -> int:
        return self.meta_batch


SETTINGS = {
    "omniglot_5w1s": Setting("omniglot_5w1s", 5, 1, 1, 8, 5, 28, 1, 64),
    "omniglot_20w1s": Setting("omniglot_20w1s", 20, 1, 1, 8, 5, 28, 1, 64),
    "miniimagenet_5w1s": Setting("miniimagenet_5w1s", 5, 1, 15, 2, 5, 84, 3, 48),
}


def make_tasks(s: Setting, seed: int = 0, dtype=np.float32):
    """Random images and balanced labels: ((xs, ys), (xq, yq)) with a leading task axis."""
    rng = np.random.default_rng(seed)
    ns, nq = s.ways * s.shots, s.ways * s.queries
    xs = rng.standard_normal((s.meta_batch, ns, s.image, s.image, s.channels)).astype(dtype)
    xq = rng.standard_normal((s.meta_batch, nq, s.image, s.image, s.channels)).astype(dtype)
    ys = np.tile(np.repeat(np.arange(s.ways), s.shots), (s.meta_batch, 1)).astype(np.int32)
    yq = np.tile(np.repeat(np.arange(s.ways), s.queries), (s.meta_batch, 1)).astype(np.int32)
    return (xs, ys), (xq, yq)


def build(s: Setting, *, conv_impl: str | None = None, task_batching: str = "auto",
          task_groups: int = 1, remat: bool = False, unroll: Any = "auto",
          pool_impl: str | None = None,
          inner_lr: float = 0.1, outer_lr: float = 1e-3, seed: int = 0, dtype=jnp.float32):
    """Returns ``(model, state, step_fn, kw)``: ``step_fn(state, tasks) -> (state, metrics)``
    and ``kw`` the step's ``loss_fn``, ``optimizer`` and ``config``. ``None`` = default."""
    kwargs = {} if conv_impl is None else {"conv_impl": conv_impl}
    if pool_impl is not None:
        kwargs["pool_impl"] = pool_impl
    model = models.Conv4(num_classes=s.ways, num_filters=s.filters, num_steps=s.inner_steps,
                         per_step_bn=True, activation="leaky_relu", dtype=dtype, **kwargs)
    init_key, run_key = jax.random.split(jax.random.PRNGKey(seed))
    variables = model.init(init_key, jnp.zeros((1, s.image, s.image, s.channels), dtype))
    params = variables["params"]
    if dtype != jnp.float32:
        params = jax.tree.map(lambda a: a.astype(dtype), params)
    lrs = core.init_inner_lrs(params, s.inner_steps, inner_lr, "layer_step",
                              mask=model_adapters.inner_loop_mask(variables))
    if dtype != jnp.float32:
        lrs = jax.tree.map(lambda a: None if a is None else a.astype(dtype), lrs,
                           is_leaf=lambda a: a is None)
    # MAML++ (LSLR, MSL) at a constant meta learning rate, as the experiment configs and
    # the facade build it.
    loop = meta.make_outer_loop(
        lr_granularity="layer_step", num_inner_steps=s.inner_steps, msl=s.msl,
        first_order=s.first_order, meta_lr=outer_lr, task_batching=task_batching,
        task_groups=task_groups, remat=remat, unroll=unroll)
    optimizer, config = loop.optimizer, loop.config
    state = meta.init_meta_state(params, lrs, optimizer, run_key,
                                 model_state=variables.get("batch_stats", {}))
    loss_fn = model_adapters.make_loss_fn(model, "cross_entropy", collect_bn_stats=True)
    step_fn = functools.partial(meta.jit_outer_step, loss_fn=loss_fn, optimizer=optimizer,
                                config=config, phase=(s.first_order, s.msl))
    return model, state, step_fn, dict(loss_fn=loss_fn, optimizer=optimizer, config=config)


def meta_grad_fn(s: Setting, loss_fn, config, epoch: int = 0):
    """A jitted ``(meta_params, model_state, tasks) -> (loss, grads)``: the meta-gradient
    exactly as ``meta.outer_step`` computes it (``meta.meta_gradient``), at the first outer
    step of ``epoch`` (which sets the MSL weights)."""
    step = epoch * config.iterations_per_epoch

    def f(meta_params, model_state, tasks):
        del model_state  # batch statistics: the running statistics do not enter the loss
        loss, grads, _ = meta.meta_gradient(meta_params, tasks, step=step, loss_fn=loss_fn,
                                            config=config, phase=(s.first_order, s.msl))
        return loss, grads

    return jax.jit(f)
