"""A run's workdir on disk: orbax checkpoints of the whole ``MetaState``, config.json.

``checkpoint_manager`` keeps the ``keep_best`` checkpoints of highest validation accuracy
plus the latest; ``save_checkpoint`` / ``restore_checkpoint`` write and read the whole state
(bit-exact, so a resumed run equals an uninterrupted one); ``ranked_checkpoints`` lists
them best first; ``read_workdir_config`` reads the config a run was trained with and
``check_resumable`` refuses to resume a workdir whose saved config differs.

Example:
    >>> import shutil, tempfile
    >>> workdir = pathlib.Path(tempfile.mkdtemp())
    >>> state = meta.MetaState(jnp.int32(4), {"w": jnp.ones(2)}, (), {}, jnp.zeros(2, jnp.uint32))
    >>> mngr = checkpoint_manager(workdir, keep_best=1)
    >>> for step, accuracy in ((2, 0.6), (4, 0.5)):
    ...     save_checkpoint(mngr, state, {"val_accuracy": accuracy}, {"epoch": step // 2}, step)
    >>> ranked_checkpoints(mngr)   # (step, val_accuracy), best first
    [(2, 0.6), (4, 0.5)]
    >>> restore_checkpoint(mngr, 2, state)[1]
    {'epoch': 1}
    >>> mngr.close(); shutil.rmtree(workdir)
"""

from __future__ import annotations

import json
import pathlib
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from experiments.config_lib import ConfigError, config_from_json
from maml_jax import meta

__all__ = ["CHECKPOINT_DIR", "CONFIG_FILE", "SUMMARY_FILE", "checkpoint_manager", "save_checkpoint",
           "restore_checkpoint", "ranked_checkpoints", "read_workdir_config",
           "check_resumable", "write_json"]

CHECKPOINT_DIR = "checkpoints"
CONFIG_FILE = "config.json"
SUMMARY_FILE = "train_summary.json"   # experiments.train writes it when a call ends

# Keys that may differ between the saved config and a resumed run's config.
_RESUMABLE_CHANGES = ("eval_batch_size", "num_test_tasks", "ensemble_size", "paper_test_accuracy",
                      "steps_per_call", "num_epochs")


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
    # One-device arrays come back committed to their device, freshly initialised ones are
    # not; jit keys its cache on that, so a run resumed in-process would recompile every
    # step function. Through the host they are uncommitted, like a fresh state.
    restored = [flat[k] if isinstance(flat[k], jax.Array) and len(flat[k].sharding.device_set) > 1
                else jnp.asarray(np.asarray(flat[k])) for k in sorted(flat)]
    for a, b in zip(restored, leaves, strict=True):
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
    """The workdir's saved config (``config.json``) as a dict, or None if it has none."""
    p = pathlib.Path(workdir) / CONFIG_FILE
    if not p.is_file():
        return None
    return config_from_json(p.read_text())


def _check_resume_config(saved: dict, cfg: dict) -> None:
    diff = sorted(k for k in cfg if k not in _RESUMABLE_CHANGES and saved.get(k) != cfg[k])
    if diff:
        details = ", ".join(f"{k}: {saved.get(k)!r} -> {cfg[k]!r}" for k in diff)
        raise ConfigError(f"the workdir holds a run with a different config ({details}); use "
                          "another --workdir to start a new run")
    if saved.get("num_epochs") != cfg["num_epochs"]:
        print(f"warning: num_epochs changed from {saved.get('num_epochs')} to "
              f"{cfg['num_epochs']}; the cosine schedule follows the new value", file=sys.stderr)


def check_resumable(workdir: pathlib.Path, cfg: dict, *, require: bool = False) -> bool:
    """Whether the workdir holds a checkpoint to resume from; raises ``ConfigError`` if its
    saved config differs from ``cfg`` (other than ``_RESUMABLE_CHANGES``), or if
    ``require`` (``--resume``) and there is none.

    Example:
        >>> from experiments.config_lib import mamlpp_config, validate_config
        >>> check_resumable(pathlib.Path("runs/no_such_run"), validate_config(mamlpp_config(5, 1)))
        False
    """
    ckpt_dir = pathlib.Path(workdir) / CHECKPOINT_DIR
    has_ckpt = ckpt_dir.is_dir() and any(p.name.isdigit() for p in ckpt_dir.iterdir())
    if require and not has_ckpt:
        raise ConfigError(f"--resume: no checkpoint found in {ckpt_dir}")
    if has_ckpt:
        saved = read_workdir_config(workdir)
        if saved is not None:
            _check_resume_config(saved, cfg)
    return has_ckpt


def write_json(path: pathlib.Path, obj: Any) -> None:
    """Writes JSON atomically (a killed run never leaves half a file)."""
    tmp = pathlib.Path(str(path) + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True))
    tmp.replace(path)
