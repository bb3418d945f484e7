"""From a checked config to the library's arguments: model, optimizer, sampler, state, mesh.

The library (``maml_jax``) receives explicit arguments only; ``get_setup(cfg)`` builds them
(``Setup``) and caches them per config, so that repeated runs in one process hand
``jax.jit`` the *same* static arguments and do not recompile. ``init_population`` builds
the initial ``MetaState`` (of one seed or a population), ``make_mesh`` / ``place_state`` put
it on the devices.

Example:
    >>> from experiments.config_lib import mamlpp_config, validate_config
    >>> cfg = validate_config(mamlpp_config(5, 1, num_filters=4))
    >>> setup = get_setup(cfg)
    >>> get_setup(cfg) is setup, setup.steps_per_call
    (True, 50)
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from experiments.config_lib import ConfigError
from maml_jax import core, losses, meta, models, parallel
from maml_jax.data import episodes

__all__ = ["Setup", "steps_per_call", "eval_batch_size", "get_setup", "init_state",
           "init_population", "make_mesh", "place_state", "seed_state"]


@dataclasses.dataclass(frozen=True, eq=False)
class Setup:
    model: Any
    meta_config: meta.MetaConfig
    optimizer: optax.GradientTransformation
    lr_schedule: Callable[[int], float]
    train_loss_fn: Callable
    eval_loss_fn: Callable
    sample_fn: Callable
    steps_per_call: int
    final_logits: Callable    # jitted (params, inner_lrs, (xs, ys), xq, sharding=None) -> logits
                              # per task (sharding: parallel.task_sharding(mesh))
    init_variables: Callable  # jitted model.init: one compile per Setup, not per init_state


_SETUP_KEYS = ("num_ways", "k_shot", "q_query", "num_filters", "activation", "conv_impl",
               "per_step_bn", "num_inner_steps", "num_inner_steps_eval", "msl", "msl_epochs",
               "first_order", "first_order_epochs", "learn_inner_lrs", "iterations_per_epoch",
               "task_batching", "remat", "meta_batch_size", "meta_lr", "min_meta_lr",
               "lr_schedule", "clip_value", "num_epochs", "rotate_train", "steps_per_call",
               "eval_batch_size", "rate_update", "lr_granularity", "inner_grad_clip")
_SETUP_CACHE: dict[tuple, Setup] = {}


def steps_per_call(cfg: dict) -> int:
    """The largest divisor of iterations_per_epoch not above the requested value."""
    ipe = cfg["iterations_per_epoch"]
    want = max(1, min(cfg["steps_per_call"], ipe))
    return max(d for d in range(1, want + 1) if ipe % d == 0)


def eval_batch_size(cfg: dict) -> int:
    if cfg["eval_batch_size"]:
        return cfg["eval_batch_size"]
    return 1 if jax.default_backend() == "cpu" else 100


def get_setup(cfg: dict) -> Setup:
    key = tuple((k, repr(cfg[k])) for k in _SETUP_KEYS)
    if key in _SETUP_CACHE:
        return _SETUP_CACHE[key]
    n = cfg["num_inner_steps"]
    model = models.Conv4(num_classes=cfg["num_ways"], num_filters=cfg["num_filters"],
                         num_steps=n, per_step_bn=cfg["per_step_bn"],
                         activation=cfg["activation"], conv_impl=cfg["conv_impl"])
    mc = meta.MetaConfig(num_inner_steps=n, msl=cfg["msl"], msl_epochs=cfg["msl_epochs"],
                         first_order=cfg["first_order"],
                         first_order_epochs=cfg["first_order_epochs"],
                         learn_inner_lrs=cfg["learn_inner_lrs"],
                         iterations_per_epoch=cfg["iterations_per_epoch"],
                         task_batching=cfg["task_batching"], remat=cfg["remat"],
                         inner_grad_clip=cfg["inner_grad_clip"])  # resolved by validate_config
    if cfg["lr_schedule"] == "cosine":
        schedule = meta.meta_lr_schedule(cfg["meta_lr"], cfg["min_meta_lr"], cfg["num_epochs"],
                                         cfg["iterations_per_epoch"])
        lr = schedule
    else:
        lr = float(cfg["meta_lr"])
        schedule = lambda count: lr
    optimizer = meta.make_meta_optimizer(
        lr, clip_value=cfg["clip_value"],
        **meta.rate_update_preset(cfg["rate_update"], cfg["lr_granularity"]))
    train_loss_fn = losses.make_loss_fn(model, "cross_entropy", collect_bn_stats=True)
    # Transductive evaluation (the reference's): BN uses each batch's own statistics.
    eval_loss_fn = losses.make_loss_fn(model, "cross_entropy")
    b, w, k, q, rot = (cfg["meta_batch_size"], cfg["num_ways"], cfg["k_shot"], cfg["q_query"],
                       bool(cfg["rotate_train"]))

    def sample_fn(key, images):
        xs, ys, xq, yq = episodes.sample_tasks(key, images, b, w, k, q, rotate=rot,
                                               split_name="train")
        return (xs, ys), (xq, yq)

    n_eval = cfg["num_inner_steps_eval"]
    bs = eval_batch_size(cfg)

    @functools.partial(jax.jit, static_argnames=("sharding",))
    def final_logits(params, inner_lrs, support, xq, sharding=None):
        lrs = core.extend_inner_lrs(inner_lrs, n_eval)
        support_loss = lambda p, batch, t: eval_loss_fn(p, batch, t)[0]

        def one(args):
            s, x = args
            adapted = core.adapt(support_loss, params, lrs, s, num_steps=n_eval, first_order=True,
                                 grad_clip=mc.inner_grad_clip)
            logits, _ = model.apply({"params": adapted}, x, step=jnp.int32(n_eval - 1),
                                    mutable=["batch_stats"])
            return logits

        return parallel.map_tasks(one, (support, xq), sharding=sharding, batch_size=bs)

    setup = Setup(model, mc, optimizer, schedule, train_loss_fn, eval_loss_fn, sample_fn,
                  steps_per_call(cfg), final_logits, jax.jit(model.init))
    _SETUP_CACHE[key] = setup
    return setup


# config "inner_loop" -> inner_loop_mask(only=...): ANIL adapts the classifier alone.
_ADAPTED = {"all": None, "head": "head"}


def init_state(cfg: dict, setup: Setup) -> meta.MetaState:
    """The initial MetaState: Xavier params, inner rates (BN, and for ANIL the body, masked
    out), root PRNG key."""
    init_key, run_key = jax.random.split(jax.random.PRNGKey(cfg["seed"]))
    s = cfg["image_size"]
    # One compiled init instead of the forward pass op by op (~120 small compiles).
    variables = setup.init_variables(init_key,
                                     jnp.zeros((1, s, s, cfg["image_channels"]), jnp.float32))
    params = variables["params"]
    lrs = core.init_inner_lrs(params, cfg["num_inner_steps"], float(cfg["inner_lr"]),
                              cfg["lr_granularity"],
                              mask=models.inner_loop_mask(params,
                                                          only=_ADAPTED[cfg["inner_loop"]]))
    return meta.init_meta_state(params, lrs, setup.optimizer, run_key,
                                model_state=variables.get("batch_stats", {}))


def init_population(cfg: dict, setup: Setup) -> meta.MetaState:
    """``init_state`` for ``num_seeds == 1``; else the seeds' states stacked on a leading axis.

    Seed ``i`` of a population is exactly the single-seed run with ``seed + i``.
    """
    if cfg["num_seeds"] == 1:
        return init_state(cfg, setup)
    return parallel.stack_states([init_state({**cfg, "seed": cfg["seed"] + i}, setup)
                                  for i in range(cfg["num_seeds"])])


def make_mesh(cfg: dict):
    """The run's device mesh, or None on one device (the plain single-device path).

    ``seed_shards`` > 1 on a single device is an error, not silently one shard.
    """
    if jax.device_count() == 1 and cfg["seed_shards"] == 1:
        return None
    try:
        mesh = parallel.make_mesh(cfg["seed_shards"])
        parallel.check_meta_batch(cfg["meta_batch_size"], mesh)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    return mesh


def place_state(state, cfg: dict, mesh):
    """Puts a (population) state on the mesh: replicated, or split along ``seeds``."""
    if mesh is None:
        return jax.tree.map(jnp.asarray, state)
    if cfg["num_seeds"] > 1 and mesh.shape[parallel.SEEDS_AXIS] > 1:
        return parallel.shard_seeds(state, mesh)
    return parallel.replicate(state, mesh)


def seed_state(state, cfg: dict, index: int):
    """Seed ``index`` of a population state (the state itself for a single seed)."""
    if cfg["num_seeds"] == 1:
        return state
    return parallel.unstack_state(state, index)
