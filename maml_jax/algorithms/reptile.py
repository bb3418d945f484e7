"""Reptile (Nichol, Achiam and Schulman 2018): move the meta-parameters towards each task's
adapted weights.

For each task the inner loop takes ``num_inner_steps`` steps on the support set from the
meta-parameters ``theta`` to ``phi``; the meta-"gradient" is ``theta - mean(phi)``, so an
outer SGD step of size ``eps`` is the Reptile update ``theta + eps (mean(phi) - theta)``
and the library's meta-optimizer (Adam, as the paper uses for its few-shot experiments)
takes it like any other gradient. No derivative passes through the inner loop. The inner
rates are not learned (their gradient is zero); the query set is only reported: its loss
after adaptation is the step's ``loss``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import chex
import jax
import jax.numpy as jnp
import optax

from maml_jax import core
from maml_jax.algorithms.base import LoopConfig, direction_meta_gradient, inner_unroll

PyTree = chex.ArrayTree

__all__ = ["Reptile", "INNER_OPTIMIZERS"]

#: Reptile's inner optimizers: SGD with the step's rates, or Adam scaled by them.
INNER_OPTIMIZERS = ("sgd", "adam")


@dataclasses.dataclass(frozen=True)
class Reptile:
    """Reptile's settings.

    Attributes:
      inner_optimizer: ``"sgd"`` (the step's rates from ``inner_lrs``, as MAML's inner
        loop) or ``"adam"`` (Adam's direction scaled by the step's rates; the paper's
        few-shot runs use Adam with ``beta1 = 0``).
      adam_b1: Adam's first-moment decay (0, the paper's).
      adam_b2: Adam's second-moment decay.
      adam_eps: Adam's epsilon.

    Example:
      >>> import maml_jax as mj
      >>> model = mj.MLP(hidden=(8,))
      >>> params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 1)))["params"]
      >>> config = mj.MetaConfig(num_inner_steps=3, algorithm=Reptile())
      >>> meta_params = {"params": params,
      ...                "inner_lrs": mj.init_inner_lrs(params, 3, 0.01, "scalar")}
      >>> tasks = mj.sample_sinusoid_tasks(jax.random.PRNGKey(1), 4, 5, 5)
      >>> loss, grads, extras = mj.meta_gradient(
      ...     meta_params, tasks, step=0, loss_fn=mj.make_loss_fn(model, "mse"),
      ...     config=config, phase=config.algorithm.phase(config, 0))
      >>> float(grads["inner_lrs"]["head"]["kernel"]), extras["per_step_loss"].shape
      (0.0, (4, 3))
    """

    inner_optimizer: str = "sgd"
    adam_b1: float = 0.0
    adam_b2: float = 0.999
    adam_eps: float = 1e-8

    name = "reptile"

    def __post_init__(self):
        if self.inner_optimizer not in INNER_OPTIMIZERS:
            raise ValueError(f"unknown Reptile inner_optimizer {self.inner_optimizer!r}; "
                             f"expected one of {INNER_OPTIMIZERS}")
        for name in ("adam_b1", "adam_b2"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"Reptile {name} must be in [0, 1), got {value!r}")
        core.check_positive(self.adam_eps, "Reptile adam_eps")

    def phase(self, config: LoopConfig, epoch: int) -> None:
        """Reptile's step is the same in every epoch."""
        del config, epoch
        return None

    def adapt(self, loss_fn: Callable, params: PyTree, inner_lrs: PyTree, support: Any, *,
              config: LoopConfig) -> tuple[PyTree, jax.Array]:
        """The inner loop of one task: ``(adapted params, support losses (steps,))``."""
        n = config.num_inner_steps
        lrs = core._per_step_lrs(params, inner_lrs, n)
        adam = optax.scale_by_adam(b1=self.adam_b1, b2=self.adam_b2, eps=self.adam_eps)

        def body(carry, xs):
            p, opt_state = carry
            t, lrs_t = xs
            loss, grads = jax.value_and_grad(core._loss_only(loss_fn))(p, support, t)
            grads = core.clip_inner_grads(grads, lrs_t, config.inner_grad_clip)
            if self.inner_optimizer == "adam":
                grads, opt_state = adam.update(grads, opt_state)
            return (core._sgd_update(p, grads, lrs_t), opt_state), loss

        steps = jnp.arange(n, dtype=jnp.int32)
        (adapted, _), support_losses = jax.lax.scan(
            body, (params, adam.init(params)), (steps, lrs), unroll=inner_unroll(config))
        return adapted, support_losses

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
        phase: None = None,
        task_sharding: Any = None,
    ) -> tuple[jax.Array, PyTree, dict[str, Any]]:
        """``theta - mean over tasks of phi``, and the query loss after adaptation (the
        frame: ``direction_meta_gradient``)."""
        del step, phase
        last = jnp.int32(config.num_inner_steps - 1)

        def direction(params, lrs, s, q):
            adapted, _ = self.adapt(loss_fn, params, lrs, s, config=config)
            loss, aux = core.split_loss_output(loss_fn(adapted, q, last))
            return loss, aux, jax.tree.map(jnp.subtract, params, adapted)

        return direction_meta_gradient(direction, meta_params, tasks, loss_fn=loss_fn,
                                       config=config, task_sharding=task_sharding)
