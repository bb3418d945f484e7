"""iMAML (Rajeswaran, Finn, Kakade and Levine 2019): implicit gradients of a proximal inner
loop.

Each task adapts by ``num_inner_steps`` gradient steps (the step's rates from
``inner_lrs``) on the proximal objective ``L_support(phi) + lam / 2 ||phi - theta||^2``,
from ``phi = theta``. At its minimiser ``phi*`` the meta-gradient of the query loss does not
need the inner loop's path:

    d L_query(phi*) / d theta = (I + H / lam)^{-1} grad L_query(phi*),

``H`` the support loss's Hessian at ``phi*``. It is solved by ``cg_iterations`` steps of
conjugate gradients on Hessian-vector products (forward over reverse), never forming ``H``;
memory does not grow with the inner steps. ``cg_damping`` adds ``damping * I`` to the
system (for Hessians with negative curvature, where CG needs a positive definite matrix).

Parameters the inner loop does not adapt (``None`` rates, e.g. batch-norm weights under
``inner_loop_mask``) still move ``phi*``; their exact meta-gradient at the minimiser is
``dL_query/d psi - (1 / lam) (d/d psi <grad_phi L_support(phi*, psi), x>)``, ``x`` the CG
solution above, and that is what is returned (one more mixed derivative, no extra solve).
The inner rates are not learned (their meta-gradient is zero).

The Hessian and the query loss take the last inner step's index (``step = n - 1``: the
per-step batch-norm weights of the final step). The implicit gradient is exact only at
the minimiser and with CG converged: with few inner
steps or CG iterations it is the approximation the paper uses.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import chex
import jax
import jax.numpy as jnp

from maml_jax import core
from maml_jax.algorithms.base import LoopConfig, direction_meta_gradient, inner_unroll

PyTree = chex.ArrayTree

__all__ = ["IMAML", "conjugate_gradient"]


def _vdot(a: PyTree, b: PyTree) -> jax.Array:
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b),
                                              strict=True))


def conjugate_gradient(matvec: Callable[[PyTree], PyTree], b: PyTree,
                       iterations: int) -> PyTree:
    """``iterations`` steps of conjugate gradients for ``A x = b`` from ``x = 0``, on pytrees.

    ``A`` (``matvec``) must be symmetric positive definite; in exact arithmetic the solution
    is exact after as many iterations as ``b`` has entries. A zero residual ends the
    iteration early (the remaining steps leave ``x`` as it is), and so does a direction of
    non-positive curvature (``p^T A p <= 0``: ``A`` is not positive definite there, as
    ``I + H / lam`` is not where the Hessian has eigenvalues below ``-lam``), which returns
    the iterate reached so far (truncated CG, as trust-region methods use it) instead of a
    step along a direction that would increase the quadratic model without bound.

    Example:
      >>> a = jnp.array([[4.0, 1.0], [1.0, 3.0]])
      >>> x = conjugate_gradient(lambda v: a @ v, jnp.array([1.0, 2.0]), 2)
      >>> [round(float(v), 5) for v in x]
      [0.09091, 0.63636]
    """
    x = jax.tree.map(jnp.zeros_like, b)
    r, p = b, b
    rs = _vdot(r, r)

    def body(_, carry):
        x, r, p, rs, done = carry
        ap = matvec(p)
        pap = _vdot(p, ap)
        # Stop for good at a zero residual (p = 0: converged, or b = 0) or at non-positive
        # curvature (see the docstring): alpha = 0 from then on.
        done = done | ~(pap > 0)
        alpha = jnp.where(done, 0.0, rs / jnp.where(done, 1.0, pap))
        x = jax.tree.map(lambda xi, pi: xi + alpha * pi, x, p)
        r = jax.tree.map(lambda ri, api: ri - alpha * api, r, ap)
        rs_new = _vdot(r, r)
        beta = jnp.where(done | ~(rs > 0), 0.0, rs_new / jnp.where(rs > 0, rs, 1.0))
        p = jax.tree.map(lambda ri, pi: ri + beta * pi, r, p)
        return x, r, p, rs_new, done

    x, *_ = jax.lax.fori_loop(0, iterations, body, (x, r, p, rs, jnp.array(False)))
    return x


def _adapted_mask(params: PyTree, inner_lrs: PyTree) -> PyTree:
    """True where the inner loop adapts the parameter (its rate is not None)."""
    return jax.tree.map(lambda r, p: r is not None, inner_lrs, params,
                        is_leaf=lambda x: x is None)


def _masked(tree: PyTree, mask: PyTree) -> PyTree:
    return jax.tree.map(lambda t, m: t if m else jnp.zeros_like(t), tree, mask)


@dataclasses.dataclass(frozen=True)
class IMAML:
    """iMAML's settings.

    Attributes:
      lam: the proximal regularisation strength (the paper's lambda; > 0).
      cg_iterations: conjugate-gradient iterations for the implicit gradient (>= 1).
      cg_damping: added to the system's identity, ``(1 + damping) I + H / lam`` (>= 0).

    Example:
      >>> import maml_jax as mj
      >>> model = mj.MLP(hidden=(8,))
      >>> params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 1)))["params"]
      >>> config = mj.MetaConfig(num_inner_steps=5, algorithm=IMAML(lam=2.0))
      >>> meta_params = {"params": params,
      ...                "inner_lrs": mj.init_inner_lrs(params, 5, 0.01, "scalar")}
      >>> tasks = mj.sample_sinusoid_tasks(jax.random.PRNGKey(1), 4, 5, 5)
      >>> loss, grads, _ = mj.meta_gradient(
      ...     meta_params, tasks, step=0, loss_fn=mj.make_loss_fn(model, "mse"),
      ...     config=config, phase=None)
      >>> grads["params"]["head"]["kernel"].shape
      (8, 1)
    """

    lam: float = 1.0
    cg_iterations: int = 5
    cg_damping: float = 0.0

    name = "imaml"

    def __post_init__(self):
        core.check_positive(self.lam, "iMAML lam (the proximal regularisation)")
        if isinstance(self.cg_iterations, bool) or not isinstance(self.cg_iterations, int) \
                or self.cg_iterations < 1:
            raise ValueError(f"iMAML cg_iterations must be an int >= 1, "
                             f"got {self.cg_iterations!r}")
        if not self.cg_damping >= 0:
            raise ValueError(f"iMAML cg_damping must be >= 0, got {self.cg_damping!r}")

    def phase(self, config: LoopConfig, epoch: int) -> None:
        """iMAML's step is the same in every epoch."""
        del config, epoch
        return None

    def support_objective(self, loss_fn: Callable, anchor: PyTree) -> Callable:
        """The proximal objective ``loss + lam / 2 ||p - anchor||^2`` (no derivative
        reaches ``anchor``)."""
        anchor = jax.lax.stop_gradient(anchor)

        def proximal(p, batch, step):
            loss = core._loss_only(loss_fn)(p, batch, step)
            return loss + 0.5 * self.lam * sum(
                jnp.sum(jnp.square(a - b)) for a, b in zip(
                    jax.tree.leaves(p), jax.tree.leaves(anchor), strict=True))

        return proximal

    def adapt(self, loss_fn: Callable, params: PyTree, inner_lrs: PyTree, support: Any, *,
              config: LoopConfig) -> PyTree:
        """The proximal inner loop of one task, from ``params`` (constants here)."""
        anchor = jax.lax.stop_gradient(params)
        return core.adapt(self.support_objective(loss_fn, anchor), anchor,
                          jax.lax.stop_gradient(inner_lrs), support,
                          num_steps=config.num_inner_steps, first_order=True,
                          grad_clip=config.inner_grad_clip, unroll=inner_unroll(config))

    def implicit_gradient(self, loss_fn: Callable, adapted: PyTree, mask: PyTree,
                          support: Any, query_grad: PyTree, step: int) -> PyTree:
        """The meta-gradient at the inner solution ``adapted`` from the query loss's
        gradient there (see the module docstring)."""
        train_grad = lambda p: jax.grad(core._loss_only(loss_fn))(p, support, step)

        def matvec(v):
            hv = jax.jvp(train_grad, (adapted,), (v,))[1]
            return _masked(jax.tree.map(lambda vi, hvi: (1.0 + self.cg_damping) * vi
                                        + hvi / self.lam, v, hv), mask)

        x = conjugate_gradient(matvec, _masked(query_grad, mask), self.cg_iterations)
        # Parameters held fixed in the inner loop: their direct gradient, minus the mixed
        # term through the minimiser (zero for the adapted ones, whose gradient is x).
        mixed = jax.grad(lambda p: _vdot(_masked(train_grad(p), mask), x))(adapted)
        return jax.tree.map(lambda m, xi, g, mi: xi if m else g - mi / self.lam,
                            mask, x, query_grad, mixed)

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
        """The mean query loss after the proximal inner loop and its implicit gradient (the
        frame: ``direction_meta_gradient``)."""
        del step, phase
        mask = _adapted_mask(meta_params["params"], meta_params["inner_lrs"])
        last = jnp.int32(config.num_inner_steps - 1)

        def direction(params, lrs, s, q):
            adapted = self.adapt(loss_fn, params, lrs, s, config=config)
            (loss, aux), query_grad = jax.value_and_grad(
                lambda p: core.split_loss_output(loss_fn(p, q, last)), has_aux=True)(adapted)
            return loss, aux, self.implicit_gradient(loss_fn, adapted, mask, s, query_grad, last)

        return direction_meta_gradient(direction, meta_params, tasks, loss_fn=loss_fn,
                                       config=config, task_sharding=task_sharding)
