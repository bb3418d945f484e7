"""The meta-optimizer: Adam on the meta-parameters, the learned inner rates' update
presets, the inner-gradient clip policy and the meta learning rate's cosine schedule.

``make_meta_optimizer`` builds one optax transformation of ``{"params", "inner_lrs"}``;
``RATE_UPDATE_PRESETS`` name how it moves the rates (``rate_update_preset``,
``default_rate_update``), and ``inner_grad_clip_for`` resolves the clip that goes with
them. ``maml_jax.meta`` re-exports every public name here.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from maml_jax import core

__all__ = [
    "meta_lr_schedule",
    "make_meta_optimizer",
    "INNER_LR_UPDATES",
    "RATE_UPDATE_PRESETS",
    "rate_update_preset",
    "default_rate_update",
    "PER_WEIGHT_INNER_GRAD_CLIP",
    "default_inner_grad_clip",
    "inner_grad_clip_for",
]


def meta_lr_schedule(
    init_lr: float,
    min_lr: float,
    total_epochs: int,
    iterations_per_epoch: int,
    *,
    per_epoch: bool = True,
) -> optax.Schedule:
    """Cosine annealing of the meta learning rate (MAML++ CA).

    ``per_epoch=True`` follows the reference code, whose ``CosineAnnealingLR(T_max=epochs)``
    is stepped with the epoch number, so the rate is constant within an epoch; False
    anneals smoothly over iterations.
    """
    if total_epochs < 1 or iterations_per_epoch < 1:
        raise ValueError("total_epochs and iterations_per_epoch must be >= 1")
    core.check_positive(init_lr, "the meta learning rate")
    if not min_lr == 0:
        core.check_positive(min_lr, "the final meta learning rate (min_lr; or 0)")

    def schedule(count):
        t = count // iterations_per_epoch if per_epoch else count / iterations_per_epoch
        t = jnp.minimum(jnp.asarray(t, jnp.float32), total_epochs)
        return min_lr + 0.5 * (init_lr - min_lr) * (1 + jnp.cos(jnp.pi * t / total_epochs))

    return schedule


#: How the outer step moves the learned inner rates: "additive" (the reference code: Adam
#: on the rates themselves) or "log" (Adam on log(rate): every rate stays positive and
#: moves by a bounded factor per step, whatever its scale).
INNER_LR_UPDATES = ("additive", "log")


def make_meta_optimizer(
    learning_rate: float | optax.Schedule = 1e-3,
    *,
    clip_value: float | None = None,
    inner_lr_scale: float | None = None,
    inner_lr_update: str = "additive",
) -> optax.GradientTransformation:
    """Adam on the meta-parameters ``{"params", "inner_lrs"}``.

    Args:
      learning_rate: the meta learning rate or an optax schedule (``meta_lr_schedule``).
      clip_value: clip meta-gradients element-wise to ``[-clip_value, clip_value]`` (the
        reference does so, with 10, for mini-ImageNet only).
      inner_lr_scale: multiply the Adam updates of the inner learning rates by this factor.
        Adam moves every parameter by about the learning rate per step whatever its scale,
        so rates initialised far below the weights' scale (the sinusoid's 0.01) can grow
        fast enough to make the inner loop diverge. None (the reference) = same rate.
      inner_lr_update: one of ``INNER_LR_UPDATES``. "log" is Adam on ``rho = log(rate)``
        with the rates kept as they are in the meta-parameters (so every consumer of
        ``inner_lrs`` sees rates): the gradient becomes ``rate * dL/drate`` and Adam's
        update ``u`` becomes ``rate <- rate * exp(u)``, a change of at most a factor
        ``exp(~lr)`` per step. The initial rates must then be positive.

    Example:
      >>> opt = make_meta_optimizer(meta_lr_schedule(1e-3, 1e-5, 100, 500))
      >>> opt = make_meta_optimizer(1e-3, inner_lr_update="log")
    """
    if inner_lr_update not in INNER_LR_UPDATES:
        raise ValueError(f"unknown inner_lr_update {inner_lr_update!r}; expected one of "
                         f"{INNER_LR_UPDATES}")
    if not callable(learning_rate):   # a schedule is checked by whoever built it
        core.check_positive(learning_rate, "the meta learning rate")
    if clip_value is not None:
        core.check_positive(clip_value, "clip_value")
    if inner_lr_scale is not None:
        core.check_positive(inner_lr_scale, "inner_lr_scale")
    parts = []
    if clip_value is not None:
        parts.append(optax.clip(clip_value))
    if inner_lr_update == "log":
        parts.append(_log_rate_gradients())
    parts.append(optax.adam(learning_rate))
    if inner_lr_scale is not None:
        parts.append(_scale_inner_lrs(inner_lr_scale))
    if inner_lr_update == "log":
        parts.append(_multiplicative_rate_updates())
    return parts[0] if len(parts) == 1 else optax.chain(*parts)


#: Named settings of how the outer step moves the inner rates (``make_meta_optimizer``
#: arguments):
#:
#: * "reference": the MAML++ code's, Adam on the rates at the weights' meta learning rate
#:   (every rate moves by about the meta learning rate per step, whatever its value; it may
#:   turn negative). The paper's numbers were made with it; "auto" for per-tensor rates.
#: * "log_10x": Adam on log(rate) at 10x the meta learning rate: every rate stays positive
#:   and moves by at most about 1 % of its value per step at a meta learning rate of 1e-3
#:   (a factor of 20 in 300 steps, when the meta-gradient keeps its sign). "auto" for
#:   per-weight rates ("parameter", "meta_sgd"), chosen by measurement
#:   (``benchmarks/rate_learning.py``, ``benchmarks/rate_divergence.py`` and the learned-rates
#:   grid on the results page): at the seed's settings (rates 0.01, meta learning rate
#:   1e-3, 5 steps) per-weight rates then learn as fast as per-tensor ones, and no run of
#:   the 20,000-step grid diverged.
#: * "log": Adam on log(rate) at a tenth of the meta learning rate (at 1e-3 a rate moves by
#:   about 1e-4 of its value per step: nearly frozen, which kept it stable). The per-weight
#:   default until 2026-12-06; with "reference", per-weight runs of 5 inner steps diverged.
#: * "reference_0.1x": the reference update at a tenth of the meta learning rate, this
#:   repository's sinusoid MAML++ recipe (its rates start at 0.01, far below the weights'
#:   scale).
RATE_UPDATE_PRESETS = {
    "reference": {"inner_lr_update": "additive", "inner_lr_scale": None},
    "log_10x": {"inner_lr_update": "log", "inner_lr_scale": 10.0},
    "log": {"inner_lr_update": "log", "inner_lr_scale": 0.1},
    "reference_0.1x": {"inner_lr_update": "additive", "inner_lr_scale": 0.1},
}


_PER_WEIGHT = ("parameter", "meta_sgd")   # the granularities with one rate per weight


def _check_granularity(granularity: str) -> None:
    if granularity not in core.GRANULARITIES:
        raise ValueError(f"unknown granularity {granularity!r}; expected one of "
                         f"{core.GRANULARITIES}")


def default_rate_update(granularity: str) -> str:
    """The ``RATE_UPDATE_PRESETS`` name that ``"auto"`` means for ``granularity``: "log_10x"
    for per-weight rates ("parameter", "meta_sgd"), "reference" for per-tensor ones
    ("scalar", "layer_step": MAML++'s LSLR as the paper trained it).

    Example:
      >>> default_rate_update("meta_sgd"), default_rate_update("layer_step")
      ('log_10x', 'reference')
    """
    _check_granularity(granularity)
    return "log_10x" if granularity in _PER_WEIGHT else "reference"


def rate_update_preset(preset: str, granularity: str | None = None) -> dict[str, Any]:
    """The ``make_meta_optimizer`` keyword arguments of a ``RATE_UPDATE_PRESETS`` name, or
    of ``"auto"`` (``default_rate_update(granularity)``).

    Example:
      >>> rate_update_preset("log")
      {'inner_lr_update': 'log', 'inner_lr_scale': 0.1}
      >>> rate_update_preset("auto", "layer_step")["inner_lr_update"]
      'additive'
      >>> opt = make_meta_optimizer(1e-3, **rate_update_preset("auto", "parameter"))
    """
    if preset == "auto":
        if granularity is None:
            raise ValueError("rate_update_preset('auto') needs the granularity")
        preset = default_rate_update(granularity)
    if preset not in RATE_UPDATE_PRESETS:
        raise ValueError(f"unknown rate update preset {preset!r}; expected 'auto' or one of "
                         f"{sorted(RATE_UPDATE_PRESETS)}")
    return dict(RATE_UPDATE_PRESETS[preset])


#: The inner-gradient clip (``MetaConfig.inner_grad_clip``) that "auto" means for per-weight
#: rates. Measured on the 5-shot sinusoid (``benchmarks/rate_divergence.py``): without it a
#: per-weight, per-step run in log space still let the inner loop blow up on some tasks
#: (meta losses of 1e12 and more) and one of three seeds stopped non-finite at outer step
#: 13,609; with it no run did. Fixed-rate MAML with 5 steps shows the same blow-ups.
PER_WEIGHT_INNER_GRAD_CLIP = 100.0


def default_inner_grad_clip(granularity: str) -> float | None:
    """The inner-gradient clip that ``"auto"`` means for ``granularity``:
    ``PER_WEIGHT_INNER_GRAD_CLIP`` for per-weight rates ("parameter", "meta_sgd"), None (no
    clip, as the reference code) for per-tensor ones.

    Example:
      >>> default_inner_grad_clip("parameter"), default_inner_grad_clip("layer_step")
      (100.0, None)
    """
    _check_granularity(granularity)
    return PER_WEIGHT_INNER_GRAD_CLIP if granularity in _PER_WEIGHT else None


def inner_grad_clip_for(value: float | str | None, granularity: str) -> float | None:
    """``MetaConfig.inner_grad_clip`` from a setting: a number > 0, None (no clip) or
    ``"auto"`` (``default_inner_grad_clip(granularity)``).

    Example:
      >>> inner_grad_clip_for("auto", "meta_sgd"), inner_grad_clip_for(None, "meta_sgd")
      (100.0, None)
    """
    if isinstance(value, str):
        if value != "auto":
            raise ValueError(f"inner_grad_clip must be a number > 0, None or 'auto', got "
                             f"{value!r}")
        return default_inner_grad_clip(granularity)
    core._check_grad_clip(value, "inner_grad_clip")
    return None if value is None else float(value)


def _rates_of(params, what: str):
    if params is None or "inner_lrs" not in params:
        raise ValueError(f"inner_lr_update='log' needs the meta-parameters in {what} "
                         "(optimizer.update(grads, state, meta_params))")
    return params["inner_lrs"]


def _check_positive_rates(rates) -> None:
    """A log-space rate must start positive; checked where the values are concrete."""
    for path, r in jax.tree_util.tree_flatten_with_path(rates)[0]:
        try:
            low = float(np.min(np.asarray(r)))
        except jax.errors.TracerArrayConversionError:   # under jit: checked when concrete
            return
        if not low > 0:
            raise ValueError(f"inner_lr_update='log' keeps the inner rates positive, so every "
                             f"initial rate must be > 0; inner_lrs{jax.tree_util.keystr(path)} "
                             f"has {low:g}")


def _log_rate_gradients() -> optax.GradientTransformation:
    """d/d log(rate) = rate * d/d rate, for the ``"inner_lrs"`` part."""

    def init(params):
        _check_positive_rates(_rates_of(params, "optimizer.init"))
        return optax.EmptyState()

    def update(updates, state, params=None):
        updates = dict(updates)
        updates["inner_lrs"] = jax.tree.map(lambda g, r: g * r, updates["inner_lrs"],
                                            _rates_of(params, "optimizer.update"))
        return updates, state

    return optax.GradientTransformation(init, update)


def _multiplicative_rate_updates() -> optax.GradientTransformation:
    """A step ``u`` on log(rate) as an additive update of the rate: ``rate * expm1(u)``."""

    def init(params):
        del params
        return optax.EmptyState()

    def update(updates, state, params=None):
        updates = dict(updates)
        updates["inner_lrs"] = jax.tree.map(lambda u, r: r * jnp.expm1(u), updates["inner_lrs"],
                                            _rates_of(params, "optimizer.update"))
        return updates, state

    return optax.GradientTransformation(init, update)


def _scale_inner_lrs(factor: float) -> optax.GradientTransformation:
    """Scales the ``"inner_lrs"`` part of ``{"params", "inner_lrs"}`` updates."""

    def init(params):
        del params
        return optax.EmptyState()

    def update(updates, state, params=None):
        del params
        updates = dict(updates)
        updates["inner_lrs"] = jax.tree.map(lambda u: u * factor, updates["inner_lrs"])
        return updates, state

    return optax.GradientTransformation(init, update)
