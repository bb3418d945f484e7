"""Shared pieces of the experiment scripts: data, model wiring, checkpoints, evaluation.

The library (``maml_jax``) receives explicit arguments only; this module turns a config
dict into those arguments. Built objects (model, loss functions, optimizer, sampler) are
cached per config so that repeated runs in one process hand ``jax.jit`` the *same*
static arguments and do not recompile.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from maml_jax import core, losses, meta, models, parallel
from maml_jax.data import episodes, image_folder, miniimagenet, omniglot, tfds_omniglot

from experiments.config_lib import ConfigError

CHECKPOINT_DIR = "checkpoints"
CONFIG_FILE = "config.json"


class DataError(RuntimeError):
    """The data could not be found or loaded (message names --data-dir and the env var)."""


# ------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------

def synthetic_images(num_classes: int, image_size: int = 28, seed: int = 0,
                     drawings: int = omniglot.DRAWINGS_PER_CLASS) -> np.ndarray:
    """Learnable stand-in for Omniglot: ``[C, 20, S, S]`` float32 in [0, 1].

    Each class is a random blocky glyph (ink 0 on paper 1); each drawing shifts it by up
    to one pixel and flips 3% of the pixels, so classes are distinct but not trivial.
    """
    rs = np.random.RandomState(seed)
    cells = max(1, image_size // 4)
    glyph = rs.rand(num_classes, cells, cells) < 0.35
    glyph = np.kron(glyph, np.ones((4, 4), bool))[:, :image_size, :image_size]
    pad = image_size - glyph.shape[1]
    glyph = np.pad(glyph, ((0, 0), (0, pad), (0, pad)))
    out = np.empty((num_classes, drawings, image_size, image_size), np.float32)
    for c in range(num_classes):
        for d in range(drawings):
            g = np.roll(glyph[c], (rs.randint(-1, 2), rs.randint(-1, 2)), axis=(0, 1))
            g = g ^ (rs.rand(image_size, image_size) < 0.03)
            out[c, d] = 1.0 - g.astype(np.float32)
    return out


def load_images(cfg: dict, data_dir: str | None) -> tuple[Any, dict[str, np.ndarray]]:
    """Returns ``(images, {'train','val','test'} class indices)``.

    ``images``: Omniglot and synthetic glyphs as float32 ``[C, 20, S, S]``; image datasets
    as :class:`~maml_jax.data.episodes.ClassImages` (``uint8``, normalised on the device
    with the training split's statistics). Index classes with :func:`select_classes`.
    """
    if cfg["data"] in ("miniimagenet", "image_folder"):
        return _load_image_dataset(cfg, data_dir)
    if cfg["data"] == "synthetic":
        images = synthetic_images(cfg["synthetic_num_classes"], cfg["image_size"],
                                  cfg["synthetic_seed"])
        splits = omniglot.split_classes(cfg["synthetic_num_classes"], preset="custom",
                                        seed=cfg["split_seed"], counts=cfg["synthetic_counts"])
        return images, splits
    if cfg["data"] == "tfds":  # TFDS's data folder (default $TFDS_DATA_DIR or ~/tensorflow_datasets)
        try:
            data = tfds_omniglot.load_tfds_omniglot(data_dir, image_size=cfg["image_size"])
        except tfds_omniglot.TfdsOmniglotError as err:
            raise DataError(f"{err} (--data-dir DIR names the TFDS data folder)") from None
        return data.images, omniglot.split_classes(len(data.class_names), preset=cfg["split"],
                                                   seed=cfg["split_seed"])
    root = omniglot.resolve_data_dir(data_dir)
    try:
        # Missing archives are downloaded (official URLs, verified) where the network
        # allows; without network this fails at once with a message naming the flag.
        data = omniglot.load_omniglot(root, image_size=cfg["image_size"], download=True)
    except omniglot.OmniglotNotFoundError as err:
        raise DataError(
            f"Omniglot data not found in {root}. Pass the directory holding "
            f"images_background.zip and images_evaluation.zip with --data-dir DIR or set "
            f"the {omniglot.DATA_DIR_ENV_VAR} environment variable. ({err})") from None
    except omniglot.OmniglotArchiveError as err:
        raise DataError(f"Omniglot archives in {root} are damaged: {err}") from None
    splits = omniglot.split_classes(len(data.class_names), preset=cfg["split"],
                                    seed=cfg["split_seed"])
    return data.images, splits


def _load_image_dataset(cfg: dict, data_dir: str | None):
    kind = cfg["data"]
    if data_dir is None:
        layout = miniimagenet.LAYOUTS if kind == "miniimagenet" else (
            "ROOT/{train,val,test}/<class>/<image> or ROOT/<class>/<image>")
        raise DataError(f"data={kind!r} cannot be downloaded: pass --data-dir DIR, the folder "
                        f"holding {layout}")
    try:
        if kind == "miniimagenet":
            ds = miniimagenet.load_miniimagenet(data_dir, image_size=cfg["image_size"],
                                                resize=cfg["image_resize"],
                                                strict=cfg["dataset_strict"])
        else:
            ds = image_folder.load_image_folder(
                data_dir, image_size=cfg["image_size"], channels=cfg["image_channels"],
                resize=cfg["image_resize"], split_fractions=cfg["split_fractions"],
                split_counts=cfg["split_counts"], seed=cfg["split_seed"])
        # Before anything compiles: a class too small for K + Q is named with its folder.
        for split, q in (("train", cfg["q_query"]), ("val", cfg["q_query_eval"]),
                         ("test", cfg["q_query_eval"])):
            image_folder.check_split_request(ds, split, cfg["num_ways"], cfg["k_shot"], q)
    except image_folder.DatasetError as err:
        raise DataError(str(err)) from None
    return ds.data, ds.splits


def select_classes(images, classes: np.ndarray):
    """The classes ``classes`` of :func:`load_images`'s images (array or ClassImages)."""
    return images.take(classes) if isinstance(images, episodes.ClassImages) else images[classes]


def device_images(images):
    """Image datasets as float32 where that fits a quarter of the device's memory (no
    per-episode scaling), else ``uint8``; Omniglot's float arrays unchanged."""
    if isinstance(images, episodes.ClassImages) and images.images.dtype == np.uint8:
        limit = parallel.device_memory_limit()
        if limit is not None and 4 * images.images.size <= limit // 4:
            return images.as_float()
    return images


def images_nbytes(images) -> int:
    """Bytes of an images array or ClassImages."""
    return int(sum(x.nbytes for x in jax.tree.leaves(images)))


def check_task_requests(cfg: dict, splits: dict[str, np.ndarray], images=None) -> None:
    """Fails fast (ConfigError) for tasks a split cannot provide."""
    requests = (("train", cfg["q_query"]), ("val", cfg["q_query_eval"]), ("test", cfg["q_query_eval"]))
    for name, q in requests:
        if isinstance(images, episodes.ClassImages):
            drawings = int(np.min(np.asarray(images.counts)[splits[name]]))
        elif images is not None:
            drawings = int(np.shape(images)[1])
        else:
            drawings = omniglot.DRAWINGS_PER_CLASS
        try:
            episodes.validate_task_spec(len(splits[name]), cfg["num_ways"], cfg["k_shot"], q,
                                        drawings, split_name=name)
        except ValueError as err:
            raise ConfigError(f"bad task request: {err}") from None


def fixed_eval_tasks(images: jax.Array, cfg: dict, split: str):
    """The config's fixed val or test tasks as ``((xs, ys), (xq, yq))``."""
    num = cfg["num_val_tasks"] if split == "val" else cfg["num_test_tasks"]
    seed = cfg["val_seed"] if split == "val" else cfg["test_seed"]
    xs, ys, xq, yq = episodes.fixed_tasks(images, num_ways=cfg["num_ways"], k_shot=cfg["k_shot"],
                                          q_query=cfg["q_query_eval"], num_tasks=num, seed=seed,
                                          split_name=split)
    return (xs, ys), (xq, yq)


# ------------------------------------------------------------------------------------
# Model wiring (cached per config)
# ------------------------------------------------------------------------------------

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


_SETUP_KEYS = ("num_ways", "k_shot", "q_query", "num_filters", "activation", "conv_impl",
               "per_step_bn", "num_inner_steps", "num_inner_steps_eval", "msl", "msl_epochs",
               "first_order", "first_order_epochs", "learn_inner_lrs", "iterations_per_epoch",
               "task_batching", "remat", "meta_batch_size", "meta_lr", "min_meta_lr",
               "lr_schedule", "clip_value", "num_epochs", "rotate_train", "steps_per_call",
               "eval_batch_size")
_SETUP_CACHE: dict[tuple, Setup] = {}


def steps_per_call(cfg: dict) -> int:
    """The largest divisor of iterations_per_epoch not above the requested value."""
    ipe, want = cfg["iterations_per_epoch"], max(1, min(cfg["steps_per_call"], cfg["iterations_per_epoch"]))
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
                         task_batching=cfg["task_batching"], remat=cfg["remat"])
    if cfg["lr_schedule"] == "cosine":
        schedule = meta.meta_lr_schedule(cfg["meta_lr"], cfg["min_meta_lr"], cfg["num_epochs"],
                                         cfg["iterations_per_epoch"])
        lr = schedule
    else:
        lr = float(cfg["meta_lr"])
        schedule = lambda count: lr  # noqa: E731
    optimizer = meta.make_meta_optimizer(lr, clip_value=cfg["clip_value"])
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
        support_loss = lambda p, batch, t: eval_loss_fn(p, batch, t)[0]  # noqa: E731

        def one(args):
            s, x = args
            adapted = core.adapt(support_loss, params, lrs, s, num_steps=n_eval, first_order=True)
            logits, _ = model.apply({"params": adapted}, x, step=jnp.int32(n_eval - 1),
                                    mutable=["batch_stats"])
            return logits

        return parallel.map_tasks(one, (support, xq), sharding=sharding, batch_size=bs)

    setup = Setup(model, mc, optimizer, schedule, train_loss_fn, eval_loss_fn, sample_fn,
                  steps_per_call(cfg), final_logits)
    _SETUP_CACHE[key] = setup
    return setup


def init_state(cfg: dict, setup: Setup) -> meta.MetaState:
    """The initial MetaState: Xavier params, inner rates (BN masked out), root PRNG key."""
    init_key, run_key = jax.random.split(jax.random.PRNGKey(cfg["seed"]))
    s = cfg["image_size"]
    # One compiled init instead of the forward pass op by op (~120 small compiles).
    variables = jax.jit(setup.model.init)(init_key, jnp.zeros((1, s, s, cfg["image_channels"]),
                                                              jnp.float32))
    params = variables["params"]
    lrs = core.init_inner_lrs(params, cfg["num_inner_steps"], float(cfg["inner_lr"]),
                              cfg["lr_granularity"], mask=models.inner_loop_mask(params))
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
    """The run's device mesh, or None on one device (the plain single-device path)."""
    if jax.device_count() == 1:
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


def evaluate_params(setup: Setup, cfg: dict, meta_params: dict, tasks, mesh=None) -> dict[str, Any]:
    """Per-task query loss / accuracy after 0..N inner steps on fixed tasks (host arrays).

    With a ``mesh`` the tasks are split over its ``tasks`` axis (``parallel``).
    """
    if mesh is None:
        task_losses, aux = meta.jit_evaluate_tasks(
            setup.eval_loss_fn, meta_params["params"], meta_params["inner_lrs"], tasks,
            num_steps=cfg["num_inner_steps_eval"], batch_size=eval_batch_size(cfg))
    else:
        meta_params, tasks = parallel.replicate((meta_params, tasks), mesh)
        task_losses, aux = parallel.evaluate_tasks_sharded(
            setup.eval_loss_fn, meta_params["params"], meta_params["inner_lrs"], tasks,
            num_steps=cfg["num_inner_steps_eval"], mesh=mesh, batch_size=eval_batch_size(cfg))
    return {"loss": parallel.host_array(task_losses),
            "accuracy": parallel.host_array(aux["accuracy"])}


def tree_all_finite(tree) -> bool:
    return all(bool(np.all(np.isfinite(parallel.host_array(x)))) for x in jax.tree.leaves(tree))


# ------------------------------------------------------------------------------------
# Checkpoints (orbax)
# ------------------------------------------------------------------------------------

def _val_accuracy(metrics) -> float:
    return float(metrics["val_accuracy"])


def checkpoint_manager(workdir: pathlib.Path, keep_best: int, read_only: bool = False):
    """Keeps the ``keep_best`` checkpoints of highest val accuracy plus the latest one."""
    import orbax.checkpoint as ocp
    from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

    policy = pp.AnyPreservationPolicy([
        pp.BestN(get_metric_fn=_val_accuracy, reverse=False, n=keep_best,
                 keep_checkpoints_without_metrics=False),
        pp.LatestN(n=1),
    ])
    # best_fn only makes the manager record each checkpoint's metrics (retention is
    # decided by ``policy``); saving is synchronous so a kill never leaves a partial step.
    options = ocp.CheckpointManagerOptions(
        best_fn=_val_accuracy, best_mode="max", preservation_policy=policy,
        enable_async_checkpointing=False, create=not read_only, read_only=read_only,
        save_interval_steps=0 if read_only else 1)
    path = (pathlib.Path(workdir) / CHECKPOINT_DIR).resolve()
    return ocp.CheckpointManager(path, item_names=("state", "meta"), options=options)


def _flat(tree) -> dict[str, Any]:
    return {f"{i:05d}": x for i, x in enumerate(jax.tree.leaves(tree))}


def save_checkpoint(mngr, state: meta.MetaState, metrics: dict, info: dict, step: int) -> None:
    """Saves the whole state at outer step ``step`` (every process calls it: orbax
    coordinates several hosts and writes each array once)."""
    import orbax.checkpoint as ocp
    mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(_flat(state)),
                                            meta=ocp.args.JsonSave(info)),
              metrics=metrics, force=True)
    mngr.wait_until_finished()


def restore_checkpoint(mngr, step: int, template: meta.MetaState) -> tuple[meta.MetaState, dict]:
    """Restores the full MetaState (bit-exact) into ``template``'s structure.

    A template of global arrays (several devices or hosts) is restored with its shardings.
    """
    import orbax.checkpoint as ocp
    leaves, treedef = jax.tree.flatten(template)

    def abstract_leaf(x):
        # The template's sharding, not the saved one: a checkpoint written by several
        # devices or processes restores onto one device and vice versa.
        if isinstance(x, jax.Array) and len(x.sharding.device_set) > 1:
            return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
        return jax.ShapeDtypeStruct(np.shape(x), jnp.asarray(x).dtype,
                                    sharding=jax.sharding.SingleDeviceSharding(jax.local_devices()[0]))

    abstract = {k: abstract_leaf(x) for k, x in _flat(template).items()}
    out = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                     meta=ocp.args.JsonRestore()))
    flat = out["state"]
    if len(flat) != len(leaves):
        raise RuntimeError(f"checkpoint at step {step} has {len(flat)} arrays, expected "
                           f"{len(leaves)}: it was written by a different config")
    restored = [flat[k] if isinstance(flat[k], jax.Array) and len(flat[k].sharding.device_set) > 1
                else jnp.asarray(flat[k]) for k in sorted(flat)]
    for a, b in zip(restored, leaves):
        if a.shape != np.shape(b):
            raise RuntimeError(f"checkpoint at step {step} does not match the config's model")
    return jax.tree.unflatten(treedef, restored), out["meta"]


def ranked_checkpoints(mngr) -> list[tuple[int, float]]:
    """``(step, val_accuracy)`` of the stored checkpoints, best first (later wins ties)."""
    items = []
    for step in mngr.all_steps():
        m = mngr.metrics(step) or {}
        if "val_accuracy" in m:
            items.append((int(step), float(m["val_accuracy"])))
    items.sort(key=lambda t: (t[1], t[0]), reverse=True)
    return items


def read_workdir_config(workdir: pathlib.Path) -> dict | None:
    from experiments.config_lib import config_from_json
    p = pathlib.Path(workdir) / CONFIG_FILE
    if not p.is_file():
        return None
    return config_from_json(p.read_text())


def write_json(path: pathlib.Path, obj: Any) -> None:
    tmp = pathlib.Path(str(path) + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True))
    tmp.replace(path)
