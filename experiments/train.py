"""Meta-trains MAML / MAML++ on Omniglot from a config file.

Usage (from the repository root)::

    python -m experiments.train --config=experiments/configs/omniglot_5w1s_mamlpp.py \\
        [--config.KEY=VALUE ...] [--workdir runs/omniglot_5w1s_mamlpp] [--data-dir DIR] \\
        [--resume] [--stop-after EPOCHS] [--max-minutes M] [--no-progress] [--num-seeds S]

``--config`` names a config file (``experiments/configs/*.py``), optionally with a variant
after a colon (``omniglot_5w1s_mamlpp.py:smoke``); ``--config.KEY=VALUE`` overrides any key
of ``config_lib.base_config`` (``--config.clip_value=10``,
``--config.synthetic_counts="(40,10,10)"``; an unknown key is an error). In Python:
``train_and_evaluate(config, workdir)``.

Data directory: ``--data-dir`` > ``$MAML_JAX_DATA_DIR`` > the per-user cache. A workdir
that already holds a checkpoint is resumed automatically (``--resume`` additionally
insists that one exists); tasks come from ``fold_in(root key, step)`` and the whole
``MetaState`` is checkpointed, so a killed and resumed run ends bit-identical (on CPU) to
an uninterrupted one. The workdir receives ``config.json``, ``metrics.jsonl``,
``metrics.csv``, TensorBoard events under ``tensorboard/``, ``checkpoints/`` (best
``keep_best`` by validation accuracy plus the latest), ``training_curves.png`` and
``inner_lrs.png``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import pathlib
import sys
import time
from collections.abc import Hashable
from typing import Any

import jax
import numpy as np
from absl import flags

from experiments import (
    checkpoints,
    datasets,
    flag_parsing,
    plots,
    task_metrics,
    training_loop,
    wiring,
)
from experiments.config_lib import ConfigError, config_to_json, validate_config
from experiments.metrics_log import MetricsLogger
from maml_jax import meta, parallel

__all__ = ["train_and_evaluate", "main", "define_flags", "distributed_flags",
           "distributed_settings", "init_distributed", "check_finite", "state_digest"]


# ---------------------------------------------------------------------------------------
# Pieces of the training loop
# ---------------------------------------------------------------------------------------

def _check_max_minutes(max_minutes: float | None) -> None:
    if max_minutes is not None and not (math.isfinite(max_minutes) and max_minutes > 0):
        raise ConfigError(f"--max-minutes must be a positive number, got {max_minutes}")
    if max_minutes is not None and jax.process_count() > 1:
        # Each process would read its own clock and they could stop at different steps.
        raise ConfigError("--max-minutes is not supported with several processes")


def _place_data(images, splits: dict, cfg: dict, mesh):
    """The training classes on the device(s) and the fixed validation tasks."""
    train_images = datasets.device_images(datasets.select_classes(images, splits["train"]))
    train_images = (jax.device_put(train_images) if mesh is None
                    else parallel.replicate(train_images, mesh))
    val_tasks = datasets.fixed_eval_tasks(
        jax.device_put(datasets.select_classes(images, splits["val"])), cfg, "val")
    if mesh is not None:  # once, not at every validation
        val_tasks = parallel.replicate(val_tasks, mesh)
    return train_images, val_tasks


def _initial_state(cfg: dict, setup: wiring.Setup, mesh, mngr, resuming: bool,
                   workdir: pathlib.Path):
    """``(state, resume_step)``: the latest checkpoint's state, or a fresh one (step None)."""
    state = wiring.place_state(wiring.init_population(cfg, setup), cfg, mesh)
    if not resuming or mngr.latest_step() is None:
        return state, None
    step = int(mngr.latest_step())
    state, info = checkpoints.restore_checkpoint(mngr, step, state)
    print(f"resumed from {workdir / checkpoints.CHECKPOINT_DIR} at step {step} "
          f"(epoch {info.get('epoch')})", file=sys.stderr)
    return state, step


def _step_bytes_per_seed(setup, cfg, train_images) -> int | None:
    """Device bytes of one seed's training call (compiled alone), or None where the device
    reports no memory limit (CPU): the population is then not checked."""
    if parallel.device_memory_limit() is None:
        return None
    one = wiring.place_state(wiring.init_state(cfg, setup), {**cfg, "num_seeds": 1}, None)
    compiled = parallel.jit_train_steps.lower(
        one, jax.device_put(jax.tree.map(parallel.host_array, train_images)),
        sample_tasks=setup.sample_fn,
        num_steps=setup.steps_per_call, loss_fn=setup.train_loss_fn, optimizer=setup.optimizer,
        config=setup.meta_config, phase=meta.phase(setup.meta_config, 0)).compile()
    m = compiled.memory_analysis()
    return int(m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes)


def _check_population_memory(setup: wiring.Setup, cfg: dict, train_images, mesh) -> None:
    """A population that cannot fit the device is refused before its step compiles."""
    try:
        parallel.check_population_memory(
            _step_bytes_per_seed(setup, cfg, train_images), cfg["num_seeds"], mesh,
            shared_bytes=datasets.images_nbytes(train_images))
    except ValueError as err:
        raise ConfigError(str(err)) from None


def check_finite(metrics: dict, step: int, cfg: dict) -> None:
    """``meta.check_finite``, per seed for a population (the message names the seed)."""
    if cfg["num_seeds"] == 1:
        return meta.check_finite(metrics, step)
    for i in range(cfg["num_seeds"]):
        try:
            meta.check_finite({k: v[i] for k, v in metrics.items()}, step)
        except meta.NonFiniteLossError as err:
            raise meta.NonFiniteLossError(
                f"seed {cfg['seed'] + i} of the population: {err}") from None


def _mean(x) -> float:
    return float(np.mean(np.asarray(x)))


def _train_record(metrics: dict, step: int, epoch: int, setup: wiring.Setup,
                  phase: Hashable, population: bool) -> dict[str, Any]:
    """The logged record of one host call (``metrics`` on the host); a phase with named
    fields (MAML's ``first_order`` and ``msl``) is logged field by field."""
    per_step = metrics["per_step_loss"].reshape(-1, metrics["per_step_loss"].shape[-1])
    rec = {"step": step, "epoch": epoch, "kind": "train", "loss": _mean(metrics["loss"]),
           "accuracy": _mean(metrics["accuracy"]),
           "grad_norm": _mean(metrics["grad_norm"]),
           "meta_lr": float(setup.lr_schedule(step - 1)),
           "per_step_loss": [float(v) for v in per_step.mean(0)]}
    if hasattr(phase, "_asdict"):
        rec.update(phase._asdict())
    elif phase is not None:
        rec["phase"] = repr(phase)
    if population:
        rec["loss_per_seed"] = [float(v) for v in metrics["loss"].mean(axis=1)]
    return rec


@dataclasses.dataclass(frozen=True)
class _Validation:
    """What validating and checkpointing need besides the state (fixed for a run)."""

    cfg: dict
    setup: wiring.Setup
    val_tasks: Any
    mesh: Any
    mngr: Any
    logger: MetricsLogger | None    # None on processes other than 0 (they write nothing)
    workdir: pathlib.Path


def _validate_and_save(v: _Validation, state, step: int, epoch: int) -> dict[str, Any]:
    """Validates ``state`` and checkpoints it (ranked by its validation accuracy)."""
    if not bool(meta.tree_all_finite(state)):
        raise meta.NonFiniteLossError(
            f"meta-training stopped: the meta-parameters became non-finite by "
            f"step {step}; no checkpoint was written. Lower the learning rates.")
    val = task_metrics.validate_population(v.setup, v.cfg, state, v.val_tasks, v.mesh)
    if not math.isfinite(val["val_loss"]):
        raise meta.NonFiniteLossError(f"non-finite validation loss at step {step}")
    if v.logger is not None:
        v.logger.log({"step": step, "epoch": epoch, "kind": "val", **val})
    checkpoints.save_checkpoint(
        v.mngr, state, {"val_accuracy": val["val_accuracy"], "val_loss": val["val_loss"]},
        {"epoch": epoch + 1, "step": step, "val_accuracy": val["val_accuracy"],
         "config_name": v.cfg["name"]}, step)
    if v.logger is not None:
        plots.plot_training_curves(v.workdir)
    return val


def _progress_bar(enabled: bool, cfg: dict, total: int, step: int):
    if not enabled:
        return None
    from tqdm import tqdm
    return tqdm(total=total, initial=step, desc=cfg["name"], unit="it", dynamic_ncols=True,
                file=sys.stderr)


def _write_outputs(state, cfg: dict, workdir: pathlib.Path, summary: dict) -> None:
    """The learned rates' plot and ``train_summary.json`` (process 0 only)."""
    first = wiring.seed_state(state, cfg, 0)
    seed_note = f" (seed {cfg['seed']} of {cfg['num_seeds']})" if cfg["num_seeds"] > 1 else ""
    plots.plot_inner_lrs(jax.tree.map(parallel.host_array, first.meta_params["inner_lrs"]),
                         workdir / "inner_lrs.png",
                         title=f"{cfg['name']}: inner learning rates{seed_note}")
    checkpoints.write_json(workdir / checkpoints.SUMMARY_FILE, summary)


def state_digest(tree) -> str:
    """sha256 of a pytree's arrays (as on this host), in leaf order."""
    import hashlib
    h = hashlib.sha256()
    for x in jax.tree.leaves(tree):
        h.update(np.ascontiguousarray(parallel.host_array(x)).tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------

def train_and_evaluate(cfg, workdir: str | pathlib.Path, *, data_dir: str | None = None,
                       resume: bool = False, stop_after: int | None = None,
                       max_minutes: float | None = None, progress: bool = True,
                       images: tuple[np.ndarray, dict] | None = None) -> dict[str, Any]:
    """Trains (or resumes) a run, validating and checkpointing every epoch; returns a summary.

    See the module docstring for what the workdir receives.

    Args:
        cfg: A config (ConfigDict or dict), checked by ``validate_config``.
        workdir: The run directory; a checkpoint in it is resumed.
        data_dir: Where the config's data is (None: the dataset's default).
        resume: Insist on a checkpoint to resume from.
        stop_after: Stop once this many epochs are done (as if killed).
        max_minutes: Wall-clock limit of this call (compilation included). Training stops
            at the first epoch end where the next epoch would not fit (judged by the last
            epoch's time), or, if one epoch alone overruns it, mid-epoch after the current
            host call; either way it validates and checkpoints first, so ``evaluate`` has
            the run as it stands. The summary then says ``stopped_by: "max_minutes"`` and a
            resumed run continues the schedule.
        progress: Show a tqdm bar.
        images: Optional in-memory ``(images, {'train','val','test'} class indices)`` as
            ``datasets.load_images`` returns them (a float ``[C, 20, S, S]`` array or a
            ``ClassImages``), used instead of loading the config's data (tests, custom data).

    Usage (synthetic glyphs and a tiny network, no data to download)::

        cfg = mamlpp_config(5, 1, data="synthetic", synthetic_num_classes=30,
                            synthetic_counts=(20, 5, 5), num_filters=4, num_epochs=1,
                            iterations_per_epoch=2, steps_per_call=2, num_val_tasks=4)
        train_and_evaluate(cfg, "runs/tiny", progress=False)["finished"]   # True
    """
    cfg = validate_config(cfg)
    _check_max_minutes(max_minutes)
    workdir = pathlib.Path(workdir)
    resuming = checkpoints.check_resumable(workdir, cfg, require=resume)

    # Data, mesh and model: every request is checked here, before anything compiles.
    images, splits = images if images is not None else datasets.load_images(cfg, data_dir)
    datasets.check_task_requests(cfg, splits, images)
    mesh = wiring.make_mesh(cfg)
    setup = wiring.get_setup(cfg)
    # Several processes (jax.distributed): all run this function; only process 0 writes
    # logs, plots and summaries (orbax coordinates the checkpoints itself).
    main_process = jax.process_index() == 0
    workdir.mkdir(parents=True, exist_ok=True)
    if main_process:
        (workdir / checkpoints.CONFIG_FILE).write_text(config_to_json(cfg))
    train_images, val_tasks = _place_data(images, splits, cfg, mesh)
    del images

    mngr = checkpoints.checkpoint_manager(workdir, cfg["keep_best"])
    state, resume_step = _initial_state(cfg, setup, mesh, mngr, resuming, workdir)
    logger = MetricsLogger(workdir, resume_step) if main_process else None
    population = cfg["num_seeds"] > 1
    if population:
        _check_population_memory(setup, cfg, train_images, mesh)
    validation = _Validation(cfg, setup, val_tasks, mesh, mngr, logger, workdir)

    ipe = cfg["iterations_per_epoch"]
    total = cfg["num_epochs"] * ipe
    step = training_loop.steps_done(state)
    t_start = epoch_start = time.time()
    bar = _progress_bar(progress and main_process, cfg, total, step)
    last_val, stopped_by = None, None
    limit_s = None if max_minutes is None else 60.0 * max_minutes
    chunks = training_loop.train_chunks(
        state, train_images, setup, total_steps=total, mesh=mesh, population=population,
        check_finite=functools.partial(check_finite, cfg=cfg))
    try:
        for chunk in chunks:
            state, step, epoch = chunk.state, chunk.step, chunk.epoch
            rec = _train_record(chunk.metrics, step, epoch, setup, chunk.phase, population)
            if logger is not None:
                logger.log(rec)
            if bar is not None:
                bar.update(chunk.num_steps)
                bar.set_postfix(epoch=epoch, loss=f"{rec['loss']:.3f}",
                                acc=f"{rec['accuracy']:.3f}",
                                val=("-" if last_val is None else f"{last_val:.3f}"))
            now = time.time()
            if step % ipe == 0:  # an epoch end: validate, checkpoint, maybe stop
                last_val = _validate_and_save(validation, state, step, epoch)["val_accuracy"]
                if stop_after is not None and epoch + 1 >= stop_after and step < total:
                    print(f"stopping after epoch {epoch + 1} as requested (--stop-after)",
                          file=sys.stderr)
                    stopped_by = "stop_after"
                    break
                now, epoch_s = time.time(), time.time() - epoch_start
                epoch_start = now
                if limit_s is not None and step < total and now - t_start + epoch_s > limit_s:
                    print(f"stopping after epoch {epoch + 1}: another epoch (~{epoch_s:.0f} s) "
                          f"would pass --max-minutes {max_minutes:g}", file=sys.stderr)
                    stopped_by = "max_minutes"
                    break
            elif limit_s is not None and now - t_start > limit_s:
                last_val = _validate_and_save(validation, state, step, epoch)["val_accuracy"]
                print(f"stopping at step {step} (mid-epoch {epoch + 1}): --max-minutes "
                      f"{max_minutes:g} reached", file=sys.stderr)
                stopped_by = "max_minutes"
                break
    finally:
        if bar is not None:
            bar.close()
        if logger is not None:
            logger.close()
        mngr.close()

    summary = {"step": step, "epochs_done": step // ipe, "finished": step >= total,
               "stopped_by": stopped_by,
               # The checkpoint this call continued from (the latest one), None if fresh.
               "resumed_from_step": resume_step,
               "wall_seconds_this_run": round(time.time() - t_start, 2),
               "last_val_accuracy": last_val,
               "num_seeds": cfg["num_seeds"], "num_devices": jax.device_count(),
               # TF32 or not on GPUs (JAX_DEFAULT_MATMUL_PRECISION; docs/performance.md).
               "matmul_precision": jax.config.jax_default_matmul_precision or "default",
               "num_processes": jax.process_count(),
               # Identifies the final meta-parameters bit for bit (processes, resumed runs).
               "meta_params_sha256": state_digest(state.meta_params)}
    if main_process:
        _write_outputs(state, cfg, workdir, summary)
    return summary


# ---------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------

def define_flags(argv: list[str]) -> flags.FlagValues:
    """The script's flags on a fresh ``FlagValues`` (one per ``main`` call: tests call
    ``main`` repeatedly in one process, and absl's global ``FLAGS`` would keep values)."""
    fv = flags.FlagValues()
    flag_parsing.define_config_flag(fv, argv)
    flags.DEFINE_string("workdir", None, "run directory (default runs/<config name>)",
                        flag_values=fv)
    flags.DEFINE_string("data-dir", None,
                        "directory with images_background.zip and images_evaluation.zip "
                        "(default: $MAML_JAX_DATA_DIR, then the per-user cache)", flag_values=fv)
    flags.DEFINE_bool("resume", False, "require a checkpoint in the workdir and continue from "
                      "it (resuming is automatic whenever one exists)", flag_values=fv)
    flags.DEFINE_float("max-minutes", None, "wall-clock limit: stop at the last epoch end that "
                       "fits (or mid-epoch if one epoch overruns), after validating and "
                       "checkpointing", flag_values=fv)
    flags.DEFINE_integer("stop-after", None, "stop once this many epochs are done (as if "
                         "killed); resume later", flag_values=fv)
    flags.DEFINE_bool("no-progress", False, "no tqdm progress bar", flag_values=fv)
    flags.DEFINE_integer("num-seeds", None, "train S independent meta-learners (seeds "
                         "seed..seed+S-1) at once (= --config.num_seeds=S)", flag_values=fv)
    # Several processes (jax.distributed), e.g. one per host; default from the environment.
    flags.DEFINE_string("coordinator-address", None, "process 0's HOST:PORT, reachable from "
                        f"every process (default ${_DIST_ENV['coordinator_address']})",
                        flag_values=fv)
    flags.DEFINE_integer("num-processes", None,
                         f"processes in all (default ${_DIST_ENV['num_processes']})",
                         flag_values=fv)
    flags.DEFINE_integer("process-id", None,
                         f"this process's index (default ${_DIST_ENV['process_id']})",
                         flag_values=fv)
    return fv


_DIST_ENV = {"coordinator_address": "JAX_COORDINATOR_ADDRESS",
             "num_processes": "JAX_NUM_PROCESSES", "process_id": "JAX_PROCESS_ID"}


def distributed_flags(fv: flags.FlagValues) -> dict[str, Any]:
    """The parsed ``--coordinator-address``, ``--num-processes``, ``--process-id``."""
    return {key: fv[key.replace("_", "-")].value for key in _DIST_ENV}


def distributed_settings(values: dict[str, Any]) -> dict[str, Any] | None:
    """The ``jax.distributed.initialize`` arguments from flags (else the environment), or
    None for a single process. Raises ConfigError for incomplete or impossible settings.

    Args:
        values: ``{"coordinator_address", "num_processes", "process_id"}`` from the flags
            (None where not given).
    """
    import os
    out = {}
    for key, env in _DIST_ENV.items():
        value = values.get(key)
        if value is None and os.environ.get(env):
            value = os.environ[env]
        if value is not None:
            out[key] = value
    if not out:
        return None
    missing = [f"--{k.replace('_', '-')}" for k in _DIST_ENV if k not in out]
    if missing:
        raise ConfigError(f"several processes need all of --coordinator-address, "
                          f"--num-processes and --process-id; missing {missing}")
    try:
        out["num_processes"], out["process_id"] = int(out["num_processes"]), int(out["process_id"])
    except ValueError:
        raise ConfigError(f"--num-processes and --process-id must be integers, got "
                          f"{out['num_processes']!r} and {out['process_id']!r}") from None
    if out["num_processes"] < 1 or not 0 <= out["process_id"] < out["num_processes"]:
        raise ConfigError(f"--process-id must be in [0, {out['num_processes']}) for "
                          f"--num-processes {out['num_processes']}, got {out['process_id']}")
    return out


def init_distributed(settings: dict[str, Any] | None) -> None:
    """``jax.distributed.initialize`` (before any other JAX call), then checks that every
    process was started with the same process count as the coordinator."""
    if settings is None:
        return
    jax.distributed.initialize(**settings, initialization_timeout=120)
    if jax.process_count() != settings["num_processes"]:
        raise ConfigError(f"this process was started with --num-processes "
                          f"{settings['num_processes']} but the coordinator at "
                          f"{settings['coordinator_address']} runs {jax.process_count()} processes")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (``python -m experiments.train``, ``maml-jax-train``).

    Args:
        argv: The arguments without the program name; None reads ``sys.argv``.

    Returns:
        The exit status (``flag_parsing.run_main``): 0, 2 for a config / flag / data
        error, 3 for a non-finite loss.

    Example (a bad config is refused before anything loads or compiles):
        >>> main(["--config=experiments/configs/omniglot_5w1s_mamlpp.py:smoke",
        ...       "--config.num_ways=0"])
        2
    """
    argv = flag_parsing.program_argv("python -m experiments.train", argv)
    return flag_parsing.run_main(functools.partial(_main, argv))


def _main(argv: list[str]) -> int:
    fv = define_flags(argv)
    rest = flag_parsing.parse_or_help(fv, argv, __doc__, config_flag="config")
    if rest is None:
        return 0
    flag_parsing.check_no_arguments(rest)
    init_distributed(distributed_settings(distributed_flags(fv)))
    config = fv["config"].value
    if fv["num-seeds"].value is not None:
        config.num_seeds = fv["num-seeds"].value
    cfg = validate_config(config)
    workdir = fv["workdir"].value or str(pathlib.Path("runs") / cfg["name"])
    summary = train_and_evaluate(cfg, workdir, data_dir=fv["data-dir"].value,
                                 resume=fv["resume"].value,
                                 stop_after=fv["stop-after"].value,
                                 max_minutes=fv["max-minutes"].value,
                                 progress=not fv["no-progress"].value)
    print(json.dumps({"workdir": workdir, **summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

