"""Experiment configs: ``ml_collections.ConfigDict``s built in ``experiments/configs/*.py``.

Each config file defines ``get_config(arg=None)``; the scripts load it with absl's
``config_flags`` (``experiments.flag_parsing``), so that any key can be overridden from the
command line and variants are chosen after a colon::

    python -m experiments.train --config=experiments/configs/omniglot_5w1s_mamlpp.py:smoke \
        --config.num_ways=20 --config.clip_value=10 --config.synthetic_counts="(40,10,10)"

Every key the scripts read is listed, with its type, in ``base_config``: the ConfigDict is
locked, so an unknown key is an error, and keys whose default is None are typed
placeholders (``--config.clip_value=10`` parses as a float). ``validate_config`` then checks
the values and returns the plain dict the training code reads.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from ml_collections import config_dict

from maml_jax import algorithms, core, meta, task_batching

__all__ = ["ConfigError", "DATA_SOURCES", "MINIIMAGENET_INNER_LR_PRESETS", "OMNIGLOT_SMOKE",
           "MINIIMAGENET_SMOKE", "base_config", "mamlpp_config", "maml_config",
           "miniimagenet_config", "sinusoid_config", "comparison_config", "compared_methods",
           "select_variant", "validate_config", "config_to_json", "config_from_json",
           "SCHEDULE_KEYS", "schedule_differences"]


class ConfigError(ValueError):
    """A config file or override is invalid (raised before anything is compiled)."""


DATA_SOURCES = ("omniglot", "synthetic", "tfds", "miniimagenet", "image_folder", "sinusoid")

#: The keys that make a schedule the paper's: a run whose config differs from its paper
#: config in any of them has a reduced (or other) schedule. The one definition
#: ``experiments.reproduce`` labels runs with and the results page calls runs full by.
SCHEDULE_KEYS = ("num_epochs", "iterations_per_epoch", "num_filters", "meta_batch_size",
                 "num_inner_steps", "num_inner_steps_eval", "msl_epochs", "image_size",
                 "q_query", "num_val_tasks", "num_test_tasks", "data", "ensemble_size")


def schedule_differences(cfg: Mapping[str, Any], paper: Mapping[str, Any]) -> list[str]:
    """``"KEY=value (paper value)"`` for every ``SCHEDULE_KEYS`` entry in which a run's
    config differs from the paper config of its cell; empty for the paper's schedule.

    Example:
        >>> paper = mamlpp_config(5, 1).to_dict()
        >>> schedule_differences({**paper, "num_epochs": 20}, paper)
        ['num_epochs=20 (paper 100)']
    """
    return [f"{k}={cfg.get(k)} (paper {paper[k]})" for k in SCHEDULE_KEYS
            if cfg.get(k) != paper[k]]


def base_config() -> config_dict.ConfigDict:
    """Every key with its default (the MAML++ reference's Omniglot 5-way 1-shot values).

    Locked: assigning a key that is not listed here raises. Keys without a default are
    typed placeholders, so that the command line can set them.

    Example:
        >>> cfg = base_config()
        >>> cfg.num_ways, cfg["clip_value"]
        (5, None)
    """
    none = config_dict.placeholder
    cfg = config_dict.ConfigDict({
        "name": "omniglot",
        # data
        "data": "omniglot",          # "omniglot" (zips) | "tfds" (a prepared TFDS omniglot)
                                     # | "synthetic" (random learnable glyphs) |
                                     # "miniimagenet" | "image_folder" (both need --data-dir)
                                     # | "sinusoid" (regression, experiments.sinusoid)
        "image_size": 28,
        "image_channels": 1,         # 1 (Omniglot, grey folders) or 3 (RGB)
        "image_resize": False,       # image datasets: resize other sizes (else an error)
        "split": "reference",        # omniglot.split_classes preset: "reference" | "maml"
        "split_fractions": none(tuple),  # image_folder, flat ROOT/<class>/: (train, val,
        "split_counts": none(tuple),     #   test) fractions or class counts (one of the two)
        "dataset_strict": True,      # miniimagenet: insist on 64/16/20 classes of 600 images
        "split_seed": 0,
        "synthetic_num_classes": 60,           # only for data="synthetic"
        "synthetic_counts": (40, 10, 10),      # train / val / test classes (synthetic)
        "synthetic_seed": 0,
        "rotate_train": True,        # per-class 90-degree rotations on train tasks
        # only for data="sinusoid" (an MLP regressor; K = k_shot support and q_query query
        # points per training task, q_query_eval query points per test task)
        "sinusoid_hidden": (40, 40),         # the MLP's hidden widths
        "sinusoid_eval_shots": (5, 10),      # support points of the test tasks, one row each
        "sinusoid_eval_steps": (1, 5, 10),   # inner steps reported (<= num_inner_steps_eval)
        # task shape
        "num_ways": 5,
        "k_shot": 1,
        "q_query": 1,                # query images per class during meta-training
        "q_query_eval": 1,           # query images per class of the val / test tasks
        # model
        "num_filters": 64,
        "activation": "leaky_relu",
        "conv_impl": "auto",         # "auto": im2col on CPU, lax.conv elsewhere
        "per_step_bn": True,
        # inner loop
        "num_inner_steps": 5,
        "num_inner_steps_eval": 5,
        "inner_lr": 0.1,
        "lr_granularity": "layer_step",   # "scalar" | "layer_step" | "parameter" | "meta_sgd"
        "learn_inner_lrs": True,
        "rate_update": "auto",       # how the outer step moves the rates: "auto" (log_10x
                                     # for per-weight rates, else reference) | a name of
                                     # maml_jax.meta.RATE_UPDATE_PRESETS; saved resolved
        # inner-gradient clip (global norm per task and step): "auto" (100 for per-weight
        # rates, else none: maml_jax.meta.default_inner_grad_clip) | None (no clip, the
        # reference) | a number > 0
        "inner_grad_clip": config_dict.FieldReference("auto", field_type=object),
        "inner_loop": "all",         # what the inner loop adapts: "all" (all but BN
                                     # weights) | "head" (ANIL: the classifier only) |
                                     # "body" (BOIL: all but the classifier)
        # the meta-learning algorithm: its registered name (maml_jax.ALGORITHMS) and its
        # own settings, e.g. {"name": "imaml", "lam": 2.0}; "maml" is MAML and MAML++ (their
        # switches are the keys above and below)
        "algorithm": {"name": "maml"},
        # outer loop
        "meta_batch_size": 8,
        "meta_lr": 1e-3,
        "min_meta_lr": 1e-5,
        "lr_schedule": "cosine",     # "cosine" (per epoch, as the reference) | "constant"
        "clip_value": none(float),
        "msl": True,
        "msl_epochs": 10,
        "first_order": False,
        "first_order_epochs": 0,     # DA: first order while epoch < this; the reference's
                                     # first_order_to_second_order_epoch X is X + 1 here
        "num_epochs": 100,
        "iterations_per_epoch": 500,
        "steps_per_call": 50,        # outer steps per host call (rounded to a divisor)
        "task_batching": "auto",
        "task_groups": 1,            # MetaConfig.task_groups (2: 3-12 % faster, 2-core CPU)
        "remat": False,
        "seed": 0,
        # scale-out (maml_jax.parallel): every device is used; the meta-batch is split over
        # the "tasks" mesh axis, a population of seeds over the "seeds" axis
        "num_seeds": 1,              # independent meta-learners trained together: seeds
                                     # seed, seed + 1, ..., seed + num_seeds - 1
        "seed_shards": 1,            # devices along the "seeds" mesh axis
        # evaluation / checkpoints
        "num_val_tasks": 600,
        "num_test_tasks": 600,
        "val_seed": 1,
        "test_seed": 2,
        "eval_batch_size": 0,        # tasks per vectorised eval batch; 0 = auto
        "keep_best": 5,              # best-k checkpoints by validation accuracy
        "ensemble_size": 5,          # top-k checkpoints averaged by evaluate
        "paper_test_accuracy": none(tuple),  # (mean, ci95) in percent, printed by evaluate
    })
    cfg.lock()
    return cfg


def _updated(cfg: config_dict.ConfigDict, updates: Mapping[str, Any]) -> config_dict.ConfigDict:
    """``cfg`` with ``updates`` applied; an unknown key is a ``ConfigError`` naming it."""
    unknown = sorted(set(updates) - set(cfg))
    if unknown:
        raise ConfigError(f"unknown config keys {unknown}; known keys: {sorted(cfg)}")
    for key, value in updates.items():
        try:
            cfg[key] = value
        except TypeError as err:  # ConfigDict keeps each key's type
            raise ConfigError(f"{key}: {err}") from None
    return cfg


def mamlpp_config(num_ways: int, k_shot: int, **updates) -> config_dict.ConfigDict:
    """MAML++ (Antoniou et al., 2019) Omniglot values for one N-way K-shot cell.

    Example:
        >>> mamlpp_config(20, 1, num_filters=16).name
        'omniglot_20w1s_mamlpp'
    """
    cfg = base_config()
    cfg.update(name=f"omniglot_{num_ways}w{k_shot}s_mamlpp", num_ways=num_ways, k_shot=k_shot)
    return _updated(cfg, updates)


def maml_config(num_ways: int, k_shot: int, **updates) -> config_dict.ConfigDict:
    """MAML (Finn et al., 2017) Omniglot values for one N-way K-shot cell.

    Fixed scalar alpha (0.4 for 5-way, 0.1 for 20-way), 1 inner step at train time and 3
    at test for 5-way (5 and 5 for 20-way), meta-batch 32 (16 for 20-way), final-step
    loss, shared batch norm, constant meta learning rate, the 'maml' class split. As in
    Finn et al.'s code, the query set has K images per class. 60,000 iterations.
    """
    five = num_ways <= 5
    cfg = base_config()
    cfg.update(
        name=f"omniglot_{num_ways}w{k_shot}s_maml", num_ways=num_ways, k_shot=k_shot,
        q_query=k_shot, q_query_eval=k_shot, split="maml", per_step_bn=False,
        num_inner_steps=1 if five else 5, num_inner_steps_eval=3 if five else 5,
        inner_lr=0.4 if five else 0.1, lr_granularity="scalar", learn_inner_lrs=False,
        meta_batch_size=32 if five else 16, lr_schedule="constant", msl=False,
        num_epochs=120, iterations_per_epoch=500)
    return _updated(cfg, updates)


#: mini-ImageNet initial inner learning rate. The MAML++ reference code's mini-ImageNet
#: configs say 0.01, but its learner starts every learned rate at 0.1 (its Omniglot value);
#: "reference" (the default) reproduces what the code ran, "paper" what the configs say.
MINIIMAGENET_INNER_LR_PRESETS = {"reference": 0.1, "paper": 0.01}


def miniimagenet_config(num_ways: int, k_shot: int, method: str = "mamlpp", *,
                        inner_lr_preset: str = "reference",
                        **updates) -> config_dict.ConfigDict:
    """mini-ImageNet values for one N-way K-shot cell.

    MAML++ (the reference code's values): 48 filters, meta-batch 2, 15 query images per
    class, 5 inner steps at train and test, LSLR, per-step BN, MSL annealed over 15
    epochs, second order, element-wise meta-gradient clipping to +-10, Adam 1e-3
    cosine-annealed to 1e-5 over 100 epochs of 500 iterations, no rotations.
    MAML (Finn et al., 2017): 32 filters, meta-batch 4 (1-shot) / 2 (5-shot), 15 queries,
    5 inner steps at train and 10 at test, fixed alpha 0.01, final-step loss, shared BN,
    constant meta learning rate 1e-3, 60,000 iterations.

    Args:
        num_ways: N.
        k_shot: K.
        method: "mamlpp" or "maml".
        inner_lr_preset: MAML++ only, a key of ``MINIIMAGENET_INNER_LR_PRESETS``.
        **updates: Further keys.

    Example:
        >>> paper = miniimagenet_config(5, 1, inner_lr_preset="paper")
        >>> miniimagenet_config(5, 1).inner_lr, paper.inner_lr
        (0.1, 0.01)
    """
    if method not in ("mamlpp", "maml"):
        raise ConfigError(f"method must be 'mamlpp' or 'maml', got {method!r}")
    if inner_lr_preset not in MINIIMAGENET_INNER_LR_PRESETS:
        raise ConfigError("inner_lr_preset must be one of "
                          f"{sorted(MINIIMAGENET_INNER_LR_PRESETS)}, got {inner_lr_preset!r}")
    cfg = base_config()
    cfg.update(name=f"miniimagenet_{num_ways}w{k_shot}s_{method}", data="miniimagenet",
               image_size=84, image_channels=3, image_resize=True, rotate_train=False,
               num_ways=num_ways, k_shot=k_shot, q_query=15, q_query_eval=15)
    if method == "mamlpp":
        cfg.update(num_filters=48, meta_batch_size=2, msl_epochs=15, clip_value=10.0,
                   inner_lr=MINIIMAGENET_INNER_LR_PRESETS[inner_lr_preset])
    else:
        cfg.update(num_filters=32, meta_batch_size=4 if k_shot == 1 else 2, num_inner_steps=5,
                   num_inner_steps_eval=10, inner_lr=0.01, lr_granularity="scalar",
                   learn_inner_lrs=False, per_step_bn=False, msl=False, lr_schedule="constant",
                   num_epochs=120, iterations_per_epoch=500)
    return _updated(cfg, updates)


def sinusoid_config(**updates) -> config_dict.ConfigDict:
    """MAML (Finn et al., 2017) sinusoid regression values: one meta-learner.

    A 2 x 40 ReLU MLP (``sinusoid_hidden``), K = 10 support and 10 query points per
    training task, meta-batch 25, 1 inner step at a fixed scalar alpha 0.01, final-step
    loss, constant Adam 1e-3, 70 epochs of 1,000 iterations (the paper's 70,000), 500 outer
    steps per host call, tasks vmapped (an MLP has no convolutions). Tested on 600 fixed
    tasks (``test_seed`` 1000) with 5 and 10 support points (``sinusoid_eval_shots``) and
    100 query points (``q_query_eval``), adapted for 10 steps and reported after 1, 5 and
    10 (``sinusoid_eval_steps``). ``experiments.sinusoid`` trains and tests it.

    Example:
        >>> cfg = sinusoid_config(k_shot=5, q_query=5)
        >>> cfg.data, cfg.num_epochs * cfg.iterations_per_epoch, cfg.sinusoid_hidden
        ('sinusoid', 70000, (40, 40))
    """
    cfg = base_config()
    cfg.update(name="sinusoid_maml", data="sinusoid", k_shot=10, q_query=10, q_query_eval=100,
               per_step_bn=False, num_inner_steps=1, num_inner_steps_eval=10, inner_lr=0.01,
               lr_granularity="scalar", learn_inner_lrs=False, msl=False,
               lr_schedule="constant", meta_batch_size=25, num_epochs=70,
               iterations_per_epoch=1000, steps_per_call=500, task_batching="vmap",
               test_seed=1000)
    return _updated(cfg, updates)


# The keys a comparison adds to its shared settings (``comparison_config``).
_COMPARISON_KEYS = ("methods", "paper_note")


def _method_entry(name: str, updates: Mapping[str, Any]) -> config_dict.ConfigDict:
    """One method's keys, each typed as in ``base_config`` (so that an override of a
    method's key parses as that key's type)."""
    known = base_config()
    unknown = sorted(set(updates) - set(known))
    if unknown:
        raise ConfigError(f"method {name!r}: unknown config keys {unknown}")
    fields = {}
    for key, value in updates.items():
        try:
            fields[key] = config_dict.FieldReference(value,
                                                     field_type=known.get_ref(key).get_type())
        except TypeError as err:
            raise ConfigError(f"method {name!r}: {key}: {err}") from None
    return config_dict.ConfigDict(fields)


def comparison_config(shared: Mapping[str, Any], methods: Mapping[str, Mapping[str, Any]], *,
                      paper_note: str = "") -> config_dict.ConfigDict:
    """Several meta-learners trained and tested side by side (``experiments.sinusoid``).

    The comparison is ``shared`` (the settings every method has, a full config) plus two
    keys: ``methods``, the keys in which each named method differs from ``shared``, and
    ``paper_note``, a line the results quote. ``--config.KEY=VALUE`` changes ``KEY`` for
    every method that does not set it itself; ``--config.methods.NAME.KEY=VALUE`` changes
    a key that method ``NAME`` sets. ``compared_methods`` gives each method's config.

    Args:
        shared: A config (``sinusoid_config(...)``) or a dict of config keys.
        methods: ``{name: {key: value}}``, in the order the results list them.
        paper_note: What the paper reports, quoted under the results.

    Example:
        >>> cmp = comparison_config(sinusoid_config(),
        ...                         {"MAML": {}, "MAML-5": {"num_inner_steps": 5}})
        >>> {name: c["num_inner_steps"] for name, c in compared_methods(cmp).items()}
        {'MAML': 1, 'MAML-5': 5}
    """
    values = shared.to_dict() if isinstance(shared, config_dict.ConfigDict) else dict(shared)
    cfg = _updated(base_config(), values)
    entries = config_dict.ConfigDict({name: _method_entry(name, updates)
                                      for name, updates in methods.items()})
    with cfg.unlocked():
        cfg.methods = entries
        cfg.paper_note = paper_note
    cfg.lock()
    return cfg


def compared_methods(config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The checked config of every method of a comparison, by name, in its order.

    A method's config is the comparison's shared settings updated with its own keys and
    named after it. A plain config (no ``methods``) is one method, named by its ``name``.

    Raises:
        ConfigError: naming the method whose config is invalid.

    Example:
        >>> list(compared_methods(sinusoid_config(name="MAML")))
        ['MAML']
    """
    raw = config.to_dict() if isinstance(config, config_dict.ConfigDict) else dict(config)
    methods = raw.pop("methods", None)
    raw.pop("paper_note", None)
    if methods is None:
        cfg = validate_config(raw)
        return {cfg["name"]: cfg}
    if not methods:
        raise ConfigError("the comparison has no methods")
    out = {}
    for name, updates in methods.items():
        try:
            out[name] = validate_config({**raw, **updates, "name": name})
        except ConfigError as err:
            raise ConfigError(f"method {name!r}: {err}") from None
    return out


#: ``:smoke`` variant of the Omniglot configs: the same recipe with 16 filters and 3 epochs
#: of 100 iterations, 100 validation and the full 600 test tasks (minutes on a 2-core CPU).
OMNIGLOT_SMOKE = dict(num_filters=16, num_epochs=3, iterations_per_epoch=100,
                      steps_per_call=50, num_val_tasks=100, num_test_tasks=600,
                      eval_batch_size=20)

#: ``:smoke`` variant of the mini-ImageNet configs: 8 filters, 32 pixels, 5 query images per
#: class, 2 epochs of 20 iterations, 50 validation / test tasks, any dataset size.
MINIIMAGENET_SMOKE = dict(num_filters=8, image_size=32, q_query=5, q_query_eval=5,
                          num_epochs=2, iterations_per_epoch=20, steps_per_call=10,
                          msl_epochs=1, num_val_tasks=50, num_test_tasks=50,
                          dataset_strict=False)


def select_variant(cfg: config_dict.ConfigDict, arg: str | None,
                   variants: Mapping[str, Mapping[str, Any]]) -> config_dict.ConfigDict:
    """The variant ``arg`` of a config (``--config=FILE.py:arg``); None: ``cfg`` itself.

    A variant updates some keys and appends ``_<arg>`` to the config's name (the default
    workdir is ``runs/<name>``, so variants do not share one).

    Args:
        cfg: The config as the paper runs it.
        arg: The text after the colon of ``--config``, or None.
        variants: ``{name: updates}``.

    Example:
        >>> select_variant(mamlpp_config(5, 1), "smoke", {"smoke": OMNIGLOT_SMOKE}).name
        'omniglot_5w1s_mamlpp_smoke'
    """
    if arg is None or arg == "":
        return cfg
    if arg not in variants:
        raise ConfigError(f"unknown config variant {arg!r}; this config has "
                          f"{sorted(variants) or 'none'}")
    cfg = _updated(cfg, variants[arg])
    cfg.name = f"{cfg.name}_{arg}"
    return cfg


def validate_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Checks keys, types and ranges; returns the config as a plain dict.

    Missing keys take ``base_config``'s defaults; unknown keys are an error. The training
    code reads the returned dict (tuples stay tuples), and ``config.json`` records it.

    Args:
        config: A ConfigDict (from a config file) or a dict (tests, study grids).

    Raises:
        ConfigError: naming the first problem found.

    Example:
        >>> validate_config(mamlpp_config(5, 1))["meta_batch_size"]
        8
    """
    def need(cond, msg):
        if not cond:
            raise ConfigError(msg)

    if isinstance(config, config_dict.ConfigDict):
        config = config.to_dict()
    cfg = base_config().to_dict()
    unknown = sorted(set(config) - set(cfg))
    need(not unknown, f"config has unknown keys {unknown}; known keys: {sorted(cfg)}")
    cfg.update(config)

    for key in ("num_ways", "k_shot", "num_inner_steps", "num_inner_steps_eval",
                "meta_batch_size", "num_epochs", "iterations_per_epoch", "steps_per_call",
                "num_filters", "num_val_tasks", "num_test_tasks", "keep_best",
                "ensemble_size", "msl_epochs", "image_size", "num_seeds", "seed_shards"):
        v = cfg[key]
        need(isinstance(v, int) and not isinstance(v, bool) and v >= 1,
             f"{key} must be an integer >= 1, got {v!r}")
    for key in ("q_query", "q_query_eval", "first_order_epochs", "eval_batch_size"):
        v = cfg[key]
        need(isinstance(v, int) and not isinstance(v, bool) and v >= 0,
             f"{key} must be an integer >= 0, got {v!r}")
    need(cfg["q_query"] >= 1 and cfg["q_query_eval"] >= 1, "q_query and q_query_eval must be >= 1")
    need(cfg["data"] in DATA_SOURCES, f"data must be one of {DATA_SOURCES}, got {cfg['data']!r}")
    need(cfg["image_channels"] in (1, 3),
         f"image_channels must be 1 or 3, got {cfg['image_channels']!r}")
    need(cfg["data"] not in ("omniglot", "tfds", "synthetic") or cfg["image_channels"] == 1,
         f"data={cfg['data']!r} is grey: image_channels must be 1")
    need(cfg["data"] != "miniimagenet" or cfg["image_channels"] == 3,
         "data='miniimagenet' is RGB: image_channels must be 3")
    for key in ("split_fractions", "split_counts"):
        v = cfg[key]
        if v is not None:
            need(cfg["data"] == "image_folder", f"{key} applies to data='image_folder' only")
            need(isinstance(v, (tuple, list)) and len(v) == 3,
                 f"{key} must be 3 numbers (train, val, test), got {v!r}")
            cfg[key] = tuple(v)
    need(cfg["split"] in ("reference", "maml"),
         f"split must be 'reference' or 'maml', got {cfg['split']!r}")
    need(cfg["lr_granularity"] in core.GRANULARITIES,
         f"lr_granularity must be {'|'.join(core.GRANULARITIES)}, got "
         f"{cfg['lr_granularity']!r}")
    rate_updates = ("auto", *meta.RATE_UPDATE_PRESETS)
    need(cfg["rate_update"] in rate_updates,
         f"rate_update must be {'|'.join(rate_updates)}, got {cfg['rate_update']!r}")
    # "auto" settings are resolved here, so a saved config says what the run did ("auto"
    # may change: it did for per-weight rate updates).
    if cfg["rate_update"] == "auto":
        cfg["rate_update"] = meta.default_rate_update(cfg["lr_granularity"])
    try:
        cfg["inner_grad_clip"] = meta.inner_grad_clip_for(cfg["inner_grad_clip"],
                                                          cfg["lr_granularity"])
    except ValueError as err:
        raise ConfigError(str(err)) from None
    need(cfg["inner_loop"] in INNER_LOOPS,
         f"inner_loop must be {'|'.join(INNER_LOOPS)}, got {cfg['inner_loop']!r}")
    cfg["algorithm"] = _checked_algorithm(cfg["algorithm"])
    need(cfg["lr_schedule"] in ("cosine", "constant"),
         f"lr_schedule must be cosine|constant, got {cfg['lr_schedule']!r}")
    need(cfg["task_batching"] in ("auto", "vmap", "map"),
         f"bad task_batching {cfg['task_batching']!r}")
    try:
        task_batching.check_task_groups(cfg["task_groups"])
    except ValueError as err:
        raise ConfigError(str(err)) from None
    for key in ("meta_lr", "min_meta_lr", "inner_lr"):
        need(isinstance(cfg[key], (int, float)) and not isinstance(cfg[key], bool),
             f"{key} must be a number, got {cfg[key]!r}")
    log_space = meta.RATE_UPDATE_PRESETS[cfg["rate_update"]]["inner_lr_update"] == "log"
    need(not log_space or cfg["inner_lr"] > 0,
         f"inner_lr must be > 0 when the rates are learned in log space (rate_update="
         f"{cfg['rate_update']!r}, lr_granularity={cfg['lr_granularity']!r}), got "
         f"{cfg['inner_lr']!r}")
    counts = cfg["synthetic_counts"]
    need(isinstance(counts, (tuple, list)) and len(counts) == 3 and
         sum(int(c) for c in counts) == cfg["synthetic_num_classes"],
         f"synthetic_counts {counts!r} must be 3 sizes summing to synthetic_num_classes "
         f"({cfg['synthetic_num_classes']})")
    cfg["synthetic_counts"] = tuple(int(c) for c in counts)
    need(cfg["image_size"] >= 16, "image_size must be >= 16 (four 2x2 poolings)")
    for key, lowest in (("sinusoid_hidden", 1), ("sinusoid_eval_shots", 1),
                        ("sinusoid_eval_steps", 0)):
        v = cfg[key]
        need(isinstance(v, (tuple, list)) and len(v) >= 1 and
             all(isinstance(x, int) and not isinstance(x, bool) and x >= lowest for x in v),
             f"{key} must be a non-empty tuple of integers >= {lowest}, got {v!r}")
        cfg[key] = tuple(v)
    if cfg["data"] == "sinusoid":
        need(max(cfg["sinusoid_eval_steps"]) <= cfg["num_inner_steps_eval"],
             f"sinusoid_eval_steps {cfg['sinusoid_eval_steps']} reports steps past "
             f"num_inner_steps_eval ({cfg['num_inner_steps_eval']}), the steps the test tasks "
             "are adapted for")
        need(cfg["num_seeds"] == 1, "data='sinusoid' trains one seed per run: num_seeds must "
             "be 1 (a study grid trains several seeds as separate cells)")
    need(cfg["num_seeds"] % cfg["seed_shards"] == 0,
         f"num_seeds ({cfg['num_seeds']}) must be a multiple of seed_shards "
         f"({cfg['seed_shards']}): each device on the 'seeds' axis holds the same number of seeds")
    return cfg


#: ``inner_loop`` values: what the inner loop adapts (``wiring`` maps them to
#: ``inner_loop_mask``).
INNER_LOOPS = ("all", "head", "body")


def _checked_algorithm(value: Any) -> dict[str, Any]:
    """``algorithm`` as a plain dict, after building it once (its settings checked by the
    algorithm itself)."""
    if isinstance(value, config_dict.ConfigDict):
        value = value.to_dict()
    if not isinstance(value, Mapping) or "name" not in value:
        raise ConfigError("algorithm must be a dict with a 'name' (one of "
                          f"{sorted(algorithms.ALGORITHMS)}) and that algorithm's settings, "
                          f"got {value!r}")
    settings = dict(value)
    try:
        algorithms.make_algorithm(**settings)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"algorithm {settings}: {err}") from None
    return settings


def config_to_json(cfg: Mapping[str, Any]) -> str:
    """The checked config as the JSON text of the workdir's ``config.json``.

    Non-finite floats are written as strings ("inf"), tuples as lists.

    Example:
        >>> json.loads(config_to_json({"meta_lr": float("inf"), "a": (1, 2)}))
        {'a': [1, 2], 'meta_lr': 'inf'}
    """
    def enc(v):
        if isinstance(v, float) and not math.isfinite(v):
            return str(v)
        if isinstance(v, tuple):
            return [enc(x) for x in v]
        return v
    return json.dumps({k: enc(v) for k, v in cfg.items()}, indent=2, sort_keys=True)


# Keys added with an "auto" default, and what a run meant before they existed.
_BEFORE_THE_KEY = {"inner_grad_clip": None}   # runs before it had no inner-gradient clip
# What a rate_update saved as "auto" meant: configs were saved unresolved until 2026-12-06,
# when per-weight rates' default changed from "log" to "log_10x".
_RATE_UPDATE_AUTO_BEFORE = {"parameter": "log", "meta_sgd": "log"}


def config_from_json(text: str) -> dict[str, Any]:
    """A saved ``config.json`` as the dict ``validate_config`` returned when it was written.

    Keys the code no longer knows are dropped, new keys take their defaults (old workdirs
    stay readable), except those in ``_BEFORE_THE_KEY``: the value that reproduces what a
    run saved before the key existed did (an "auto" default would change it). Likewise a
    ``rate_update`` saved as "auto" reads as the preset "auto" meant then.

    Example:
        >>> config_from_json('{"clip_value": "inf", "split_counts": [1, 2, 3]}')["split_counts"]
        (1, 2, 3)
    """
    raw = json.loads(text)
    cfg = base_config().to_dict()
    cfg.update(_BEFORE_THE_KEY)
    for k, v in raw.items():
        if k in cfg:
            value = v
            if isinstance(value, list):  # every list-valued key is a tuple (placeholders too)
                value = tuple(value)
            if isinstance(value, str) and value in ("inf", "-inf", "nan"):
                value = float(value)
            cfg[k] = value
    if cfg["rate_update"] == "auto":
        cfg["rate_update"] = _RATE_UPDATE_AUTO_BEFORE.get(cfg["lr_granularity"], "reference")
    return cfg
