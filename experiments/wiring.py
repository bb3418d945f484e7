"""From a checked config to the library's arguments: model, optimizer, sampler, state, mesh.

The library (``maml_jax``) receives explicit arguments only; ``get_setup(cfg)`` builds them
(``Setup``: Conv4 and cross-entropy on images, or for ``data="sinusoid"`` an MLP, the mean
squared error and the sinusoid task sampler; the outer loop from ``maml_jax.make_outer_loop``
either way) and caches them per config, so that repeated runs in one process hand
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
from maml_jax import algorithms, core, meta, model_adapters, models, parallel, task_batching
from maml_jax.data import episodes
from maml_jax.data.sinusoid import sample_sinusoid_tasks

__all__ = ["Setup", "OUTER_LOOP_KEYS", "steps_per_call", "eval_batch_size", "get_setup",
           "init_state", "init_population", "make_mesh", "place_state", "seed_state"]


@dataclasses.dataclass(frozen=True, eq=False)
class Setup:
    """What training and evaluation hand the library for one config (``get_setup``)."""

    model: Any
    meta_config: meta.MetaConfig
    optimizer: optax.GradientTransformation
    lr_schedule: Callable[[int], float]
    train_loss_fn: Callable
    eval_loss_fn: Callable
    sample_fn: Callable
    steps_per_call: int
    final_logits: Callable | None  # jitted (params, inner_lrs, (xs, ys), xq, sharding=None)
                              # -> logits per task (sharding: parallel.task_sharding(mesh));
                              # None for regression (data="sinusoid"): no classes to rank
    init_variables: Callable  # jitted model.init: one compile per Setup, not per init_state


# The config keys that are make_outer_loop's arguments of the same name.
OUTER_LOOP_KEYS = ("lr_granularity", "num_inner_steps", "msl", "msl_epochs", "first_order",
                   "first_order_epochs", "learn_inner_lrs", "meta_lr", "lr_schedule",
                   "min_meta_lr", "num_epochs", "iterations_per_epoch", "clip_value",
                   "rate_update", "inner_grad_clip", "task_batching", "task_groups",
                   "remat")
# What an outer loop depends on: its keys and the algorithm (one key holding the name and
# all of that algorithm's settings, so a new algorithm or setting needs no key here).
_LOOP_SETUP_KEYS = (*OUTER_LOOP_KEYS, "algorithm")
# What an image Setup depends on: the loop's keys (derived, so that a new one cannot be
# forgotten here and give a stale cached setup) and the model's and data's.
_SETUP_KEYS = ("num_ways", "k_shot", "q_query", "num_filters", "activation", "conv_impl",
               "per_step_bn", "num_inner_steps_eval", "meta_batch_size", "rotate_train",
               "steps_per_call", "eval_batch_size", *_LOOP_SETUP_KEYS)
# What a sinusoid Setup depends on (the image keys do not apply to it).
_SINUSOID_SETUP_KEYS = ("data", "sinusoid_hidden", "k_shot", "q_query", "meta_batch_size",
                        "steps_per_call", *_LOOP_SETUP_KEYS)
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
    """The ``Setup`` of a checked config (``validate_config``), built once per config."""
    sinusoid = cfg["data"] == "sinusoid"
    key = tuple((k, repr(cfg[k])) for k in (_SINUSOID_SETUP_KEYS if sinusoid else _SETUP_KEYS))
    if key not in _SETUP_CACHE:
        _SETUP_CACHE[key] = _sinusoid_setup(cfg) if sinusoid else _image_setup(cfg)
    return _SETUP_CACHE[key]


def _outer_loop(cfg: dict) -> meta.OuterLoop:
    return meta.make_outer_loop(**{key: cfg[key] for key in OUTER_LOOP_KEYS},
                                algorithm=algorithms.make_algorithm(**cfg["algorithm"]))


def _sinusoid_setup(cfg: dict) -> Setup:
    """An MLP regressor meta-trained on sinusoid tasks drawn on the device."""
    model = models.MLP(hidden=tuple(cfg["sinusoid_hidden"]))
    loop = _outer_loop(cfg)
    # An MLP has no batch norm: training and evaluation share one loss function.
    loss_fn = model_adapters.make_loss_fn(model, "mse")
    b, k, q = cfg["meta_batch_size"], cfg["k_shot"], cfg["q_query"]

    def sample_fn(key, data):
        del data  # sinusoid tasks come from the key alone
        return sample_sinusoid_tasks(key, b, k, q)

    return Setup(model, loop.config, loop.optimizer, loop.meta_lr, loss_fn, loss_fn, sample_fn,
                 steps_per_call(cfg), None, jax.jit(model.init))


def _image_setup(cfg: dict) -> Setup:
    """Conv4 classifying N-way K-shot image tasks sampled from the training classes."""
    n = cfg["num_inner_steps"]
    model = models.Conv4(num_classes=cfg["num_ways"], num_filters=cfg["num_filters"],
                         num_steps=n, per_step_bn=cfg["per_step_bn"],
                         activation=cfg["activation"], conv_impl=cfg["conv_impl"])
    loop = _outer_loop(cfg)
    mc = loop.config
    train_loss_fn = model_adapters.make_loss_fn(model, "cross_entropy", collect_bn_stats=True)
    # Transductive evaluation (the reference's): BN uses each batch's own statistics.
    eval_loss_fn = model_adapters.make_loss_fn(model, "cross_entropy")
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
        # The inner steps of the algorithm trained with (iMAML's proximal objective).
        support_loss = mc.algorithm.support_objective(
            lambda p, batch, t: eval_loss_fn(p, batch, t)[0], params)

        def one(args):
            s, x = args
            adapted = core.adapt(support_loss, params, lrs, s, num_steps=n_eval, first_order=True,
                                 grad_clip=mc.inner_grad_clip)
            logits, _ = model.apply({"params": adapted}, x, step=jnp.int32(n_eval - 1),
                                    mutable=["batch_stats"])
            return logits

        return task_batching.map_tasks(one, (support, xq), sharding=sharding, batch_size=bs)

    return Setup(model, mc, loop.optimizer, loop.meta_lr, train_loss_fn, eval_loss_fn, sample_fn,
                 steps_per_call(cfg), final_logits, jax.jit(model.init))


# config "inner_loop" -> inner_loop_mask's arguments: ANIL adapts the classifier alone,
# BOIL everything but the classifier.
_ADAPTED = {"all": {}, "head": {"only": "head"}, "body": {"freeze": "head"}}


def init_state(cfg: dict, setup: Setup) -> meta.MetaState:
    """The initial MetaState: Xavier params, inner rates (BN, and for ANIL the body, masked
    out), root PRNG key."""
    init_key, run_key = jax.random.split(jax.random.PRNGKey(cfg["seed"]))
    # One compiled init instead of the forward pass op by op (~120 small compiles).
    variables = setup.init_variables(init_key, jnp.zeros(_example_input_shape(cfg), jnp.float32))
    params = variables["params"]
    lrs = core.init_inner_lrs(params, cfg["num_inner_steps"], float(cfg["inner_lr"]),
                              cfg["lr_granularity"],
                              mask=model_adapters.inner_loop_mask(params,
                                                                  **_ADAPTED[cfg["inner_loop"]]))
    return meta.init_meta_state(params, lrs, setup.optimizer, run_key,
                                model_state=variables.get("batch_stats", {}))


def _example_input_shape(cfg: dict) -> tuple[int, ...]:
    """One input of the config's model: a scalar x (sinusoid) or an image."""
    if cfg["data"] == "sinusoid":
        return (1, 1)
    s = cfg["image_size"]
    return (1, s, s, cfg["image_channels"])


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
