"""Meta-trains MAML / MAML++ on Omniglot from a config file.

Usage (from the repository root)::

    python -m experiments.train --config experiments/configs/omniglot_5w1s_mamlpp.py \
        [--workdir runs/omniglot_5w1s_mamlpp] [--data-dir DIR] [--set key=value ...] \
        [--resume] [--stop-after EPOCHS] [--max-minutes M] [--no-progress]

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

import argparse
import csv
import json
import math
import pathlib
import sys
import time
from typing import Any

import jax
import numpy as np

from maml_jax import meta, parallel

from experiments import common, plots
from experiments.config_lib import (ConfigError, apply_overrides, config_to_json, load_config,
                                    validate_config)

CSV_FIELDS = ("time", "step", "epoch", "kind", "loss", "accuracy", "grad_norm", "meta_lr",
              "val_loss", "val_accuracy", "val_accuracy_ci95")

# Keys that may differ between the saved config and a resumed run's config.
_RESUMABLE_CHANGES = ("eval_batch_size", "num_test_tasks", "ensemble_size", "paper_test_accuracy",
                      "steps_per_call", "num_epochs")


class MetricsLogger:
    """metrics.jsonl + metrics.csv + TensorBoard; on resume drops records after ``step``."""

    def __init__(self, workdir: pathlib.Path, resume_step: int | None):
        self.jsonl = workdir / "metrics.jsonl"
        self.csv = workdir / "metrics.csv"
        if resume_step is None:
            for p in (self.jsonl, self.csv):
                p.unlink(missing_ok=True)
        else:  # a killed run may have logged past its last checkpoint
            kept = [r for r in plots.read_jsonl(self.jsonl) if r.get("step", 0) <= resume_step]
            self.jsonl.write_text("".join(json.dumps(r) + "\n" for r in kept))
            if self.csv.is_file():
                with self.csv.open(newline="") as f:
                    rows = [r for r in csv.DictReader(f)
                            if r.get("step") and int(r["step"]) <= resume_step]
                self._write_csv(rows, "w")
        if not self.csv.is_file():
            self._write_csv([], "w")
        try:
            from tensorboardX import SummaryWriter
        except ImportError:  # e.g. an accelerator image without it: metrics.* still written
            print("warning: tensorboardX is not installed; no TensorBoard events are written "
                  "(metrics.jsonl and metrics.csv are)", file=sys.stderr)
            self.tb = None
        else:
            self.tb = SummaryWriter(str(workdir / "tensorboard"),
                                    purge_step=None if resume_step is None else resume_step + 1)

    def _write_csv(self, rows, mode):
        with self.csv.open(mode, newline="") as f:
            w = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
            if mode == "w":
                w.writeheader()
            w.writerows(rows)

    def log(self, record: dict[str, Any]) -> None:
        record = {"time": round(time.time(), 3), **record}
        with self.jsonl.open("a") as f:
            f.write(json.dumps(record) + "\n")
        self._write_csv([record], "a")
        if self.tb is None:
            return
        prefix = record["kind"]
        for k, v in record.items():
            if k in ("time", "step", "epoch", "kind"):
                continue
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                self.tb.add_scalar(f"{prefix}/{k}", v, record["step"])
            elif isinstance(v, list):
                for i, x in enumerate(v):
                    self.tb.add_scalar(f"{prefix}/{k}_{i}", x, record["step"])

    def close(self):
        if self.tb is not None:
            self.tb.flush()
            self.tb.close()


def _mean(x) -> float:
    return float(np.mean(np.asarray(x)))


def validate(setup, cfg, meta_params, tasks, mesh=None) -> dict[str, Any]:
    res = common.evaluate_params(setup, cfg, meta_params, tasks, mesh)
    acc, ci = meta.mean_ci95(res["accuracy"][:, -1]) if res["accuracy"].shape[0] > 1 else (
        res["accuracy"][:, -1].mean(), 0.0)
    return {"val_loss": float(res["loss"][:, -1].mean()), "val_accuracy": float(acc),
            "val_accuracy_ci95": float(ci),
            "val_accuracy_per_step": [float(a) for a in res["accuracy"].mean(axis=0)]}


def validate_population(setup, cfg, state, tasks, mesh=None) -> dict[str, Any]:
    """``validate`` per seed; a population's val_accuracy is the mean over its seeds (which
    ranks its checkpoints), with the per-seed values alongside."""
    if cfg["num_seeds"] == 1:
        return validate(setup, cfg, state.meta_params, tasks, mesh)
    per = [validate(setup, cfg, common.seed_state(state, cfg, i).meta_params, tasks, mesh)
           for i in range(cfg["num_seeds"])]
    out = {k: float(np.mean([v[k] for v in per])) for k in ("val_loss", "val_accuracy",
                                                              "val_accuracy_ci95")}
    out["val_accuracy_per_step"] = [float(a) for a in
                                    np.mean([v["val_accuracy_per_step"] for v in per], axis=0)]
    out["val_accuracy_per_seed"] = [v["val_accuracy"] for v in per]
    out["val_loss_per_seed"] = [v["val_loss"] for v in per]
    return out


def check_finite(metrics: dict, step: int, cfg: dict) -> None:
    """``meta.check_finite``, per seed for a population (the message names the seed)."""
    if cfg["num_seeds"] == 1:
        return meta.check_finite(metrics, step)
    for i in range(cfg["num_seeds"]):
        try:
            meta.check_finite({k: v[i] for k, v in metrics.items()}, step)
        except meta.NonFiniteLossError as err:
            raise meta.NonFiniteLossError(f"seed {cfg['seed'] + i} of the population: {err}") from None


def _check_resume_config(saved: dict, cfg: dict) -> None:
    diff = sorted(k for k in cfg if k not in _RESUMABLE_CHANGES and saved.get(k) != cfg[k])
    if diff:
        details = ", ".join(f"{k}: {saved.get(k)!r} -> {cfg[k]!r}" for k in diff)
        raise ConfigError(f"the workdir holds a run with a different config ({details}); use "
                          "another --workdir to start a new run")
    if saved.get("num_epochs") != cfg["num_epochs"]:
        print(f"warning: num_epochs changed from {saved.get('num_epochs')} to "
              f"{cfg['num_epochs']}; the cosine schedule follows the new value", file=sys.stderr)


def run_training(cfg: dict, workdir: str | pathlib.Path, *, data_dir: str | None = None,
                 resume: bool = False, stop_after: int | None = None,
                 max_minutes: float | None = None, progress: bool = True,
                 images: tuple[np.ndarray, dict] | None = None) -> dict[str, Any]:
    """Trains (or resumes) a run; returns a summary dict. See the module docstring.

    ``max_minutes``: wall-clock limit of this call (compilation included). Training stops
    at the first epoch end where the next epoch would not fit (judged by the last epoch's
    time), or, if one epoch alone overruns it, mid-epoch after the current host call; either
    way it validates and checkpoints first, so ``evaluate`` has the run as it stands. The
    summary then says ``stopped_by: "max_minutes"`` and a resumed run continues the schedule.

    ``images``: optional in-memory ``(images, {'train','val','test'} class indices)`` as
    ``common.load_images`` returns them (a float ``[C, 20, S, S]`` array or a
    ``ClassImages``), used instead of loading the config's data (tests, custom data).
    """
    cfg = validate_config(dict(cfg))
    if max_minutes is not None and not (math.isfinite(max_minutes) and max_minutes > 0):
        raise ConfigError(f"--max-minutes must be a positive number, got {max_minutes}")
    workdir = pathlib.Path(workdir)
    ckpt_dir = workdir / common.CHECKPOINT_DIR
    has_ckpt = ckpt_dir.is_dir() and any(p.name.isdigit() for p in ckpt_dir.iterdir())
    if resume and not has_ckpt:
        raise ConfigError(f"--resume: no checkpoint found in {ckpt_dir}")
    if has_ckpt:
        saved = common.read_workdir_config(workdir)
        if saved is not None:
            _check_resume_config(saved, cfg)

    # Data and request checks: everything here runs before any compilation.
    if max_minutes is not None and jax.process_count() > 1:
        # Each process would read its own clock and they could stop at different steps.
        raise ConfigError("--max-minutes is not supported with several processes")
    images, splits = images if images is not None else common.load_images(cfg, data_dir)
    common.check_task_requests(cfg, splits, images)
    mesh = common.make_mesh(cfg)
    setup = common.get_setup(cfg)
    # Several processes (jax.distributed): all run this function; only process 0 writes
    # logs, plots and summaries (orbax coordinates the checkpoints itself).
    main_process = jax.process_index() == 0
    workdir.mkdir(parents=True, exist_ok=True)
    if main_process:
        (workdir / common.CONFIG_FILE).write_text(config_to_json(cfg))

    train_images = common.device_images(common.select_classes(images, splits["train"]))
    train_images = (jax.device_put(train_images) if mesh is None
                    else parallel.replicate(train_images, mesh))
    val_tasks = common.fixed_eval_tasks(
        jax.device_put(common.select_classes(images, splits["val"])), cfg, "val")
    if mesh is not None:  # once, not at every validation
        val_tasks = parallel.replicate(val_tasks, mesh)
    del images

    mngr = common.checkpoint_manager(workdir, cfg["keep_best"])
    state = common.place_state(common.init_population(cfg, setup), cfg, mesh)
    resume_step = None
    if has_ckpt and mngr.latest_step() is not None:
        resume_step = int(mngr.latest_step())
        state, info = common.restore_checkpoint(mngr, resume_step, state)
        print(f"resumed from {ckpt_dir} at step {resume_step} (epoch {info.get('epoch')})",
              file=sys.stderr)
    logger = MetricsLogger(workdir, resume_step) if main_process else None
    population = cfg["num_seeds"] > 1
    if population:
        try:
            parallel.check_population_memory(
                setup_bytes_per_seed(setup, cfg, train_images), cfg["num_seeds"], mesh,
                shared_bytes=common.images_nbytes(train_images))
        except ValueError as err:
            raise ConfigError(str(err)) from None

    ipe, k = cfg["iterations_per_epoch"], setup.steps_per_call
    total = cfg["num_epochs"] * ipe
    step = int(parallel.host_array(state.step).reshape(-1)[0])
    t_start = time.time()
    bar = None
    if progress and main_process:
        from tqdm import tqdm
        bar = tqdm(total=total, initial=step, desc=cfg["name"], unit="it", dynamic_ncols=True,
                   file=sys.stderr)
    last_val = None
    stopped_by = None
    limit_s = None if max_minutes is None else 60.0 * max_minutes
    epoch_start = t_start

    def validate_and_save(epoch: int) -> dict[str, Any]:
        if not common.tree_all_finite(state):
            raise meta.NonFiniteLossError(
                f"meta-training stopped: the meta-parameters became non-finite by "
                f"step {step}; no checkpoint was written. Lower the learning rates.")
        val = validate_population(setup, cfg, state, val_tasks, mesh)
        if not math.isfinite(val["val_loss"]):
            raise meta.NonFiniteLossError(f"non-finite validation loss at step {step}")
        if logger is not None:
            logger.log({"step": step, "epoch": epoch, "kind": "val", **val})
        common.save_checkpoint(
            mngr, state, {"val_accuracy": val["val_accuracy"], "val_loss": val["val_loss"]},
            {"epoch": epoch + 1, "step": step, "val_accuracy": val["val_accuracy"],
             "config_name": cfg["name"]}, step)
        if main_process:
            plots.plot_training_curves(workdir)
        return val

    try:
        while step < total:
            epoch = step // ipe
            first_order, msl = meta.phase(setup.meta_config, epoch)
            state, metrics = parallel.jit_train_steps(
                state, train_images, mesh=mesh, population=population,
                sample_tasks=setup.sample_fn, num_steps=k,
                loss_fn=setup.train_loss_fn, optimizer=setup.optimizer,
                config=setup.meta_config, first_order=first_order, msl=msl)
            metrics = jax.tree.map(parallel.host_array, metrics)
            check_finite(metrics, step, cfg)
            step += k
            per_step = metrics["per_step_loss"].reshape(-1, metrics["per_step_loss"].shape[-1])
            rec = {"step": step, "epoch": epoch, "kind": "train", "loss": _mean(metrics["loss"]),
                   "accuracy": _mean(metrics["accuracy"]),
                   "grad_norm": _mean(metrics["grad_norm"]),
                   "meta_lr": float(setup.lr_schedule(step - 1)),
                   "per_step_loss": [float(v) for v in per_step.mean(0)],
                   "first_order": first_order, "msl": msl}
            if population:
                rec["loss_per_seed"] = [float(v) for v in metrics["loss"].mean(axis=1)]
            if logger is not None:
                logger.log(rec)
            if bar is not None:
                bar.update(k)
                bar.set_postfix(epoch=epoch, loss=f"{rec['loss']:.3f}", acc=f"{rec['accuracy']:.3f}",
                                val=("-" if last_val is None else f"{last_val:.3f}"))
            now = time.time()
            if step % ipe == 0:
                last_val = validate_and_save(epoch)["val_accuracy"]
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
                last_val = validate_and_save(epoch)["val_accuracy"]
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
    elapsed = time.time() - t_start
    summary = {"step": step, "epochs_done": step // ipe, "finished": step >= total,
               "stopped_by": stopped_by,
               "wall_seconds_this_run": round(elapsed, 2), "last_val_accuracy": last_val,
               "num_seeds": cfg["num_seeds"], "num_devices": jax.device_count(),
               "num_processes": jax.process_count(),
               # Identifies the final meta-parameters bit for bit (processes, resumed runs).
               "meta_params_sha256": state_digest(state.meta_params)}
    first = common.seed_state(state, cfg, 0)
    if main_process:
        seed_note = f" (seed {cfg['seed']} of {cfg['num_seeds']})" if population else ""
        plots.plot_inner_lrs(jax.tree.map(parallel.host_array, first.meta_params["inner_lrs"]),
                             workdir / "inner_lrs.png",
                             title=f"{cfg['name']}: inner learning rates{seed_note}")
        common.write_json(workdir / "train_summary.json", summary)
    return summary


def state_digest(tree) -> str:
    """sha256 of a pytree's arrays (as on this host), in leaf order."""
    import hashlib
    h = hashlib.sha256()
    for x in jax.tree.leaves(tree):
        h.update(np.ascontiguousarray(parallel.host_array(x)).tobytes())
    return h.hexdigest()


def setup_bytes_per_seed(setup, cfg, train_images) -> int | None:
    """Device bytes of one seed's training call (compiled alone), or None where the device
    reports no memory limit (CPU): the population is then not checked."""
    if parallel.device_memory_limit() is None:
        return None
    one = common.place_state(common.init_state(cfg, setup), {**cfg, "num_seeds": 1}, None)
    first_order, msl = meta.phase(setup.meta_config, 0)
    compiled = meta.jit_train_steps.lower(
        one, jax.device_put(jax.tree.map(parallel.host_array, train_images)),
        sample_tasks=setup.sample_fn,
        num_steps=setup.steps_per_call, loss_fn=setup.train_loss_fn, optimizer=setup.optimizer,
        config=setup.meta_config, first_order=first_order, msl=msl).compile()
    m = compiled.memory_analysis()
    return int(m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m experiments.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="experiments/configs/<name>.py")
    p.add_argument("--workdir", default=None, help="run directory (default runs/<config name>)")
    p.add_argument("--data-dir", default=None,
                   help="directory with images_background.zip and images_evaluation.zip "
                        "(default: $MAML_JAX_DATA_DIR, then the per-user cache)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value (repeatable)")
    p.add_argument("--resume", action="store_true",
                   help="require a checkpoint in the workdir and continue from it "
                        "(resuming is automatic whenever one exists)")
    p.add_argument("--max-minutes", type=float, default=None, metavar="M",
                   help="wall-clock limit: stop at the last epoch end that fits (or mid-epoch "
                        "if one epoch overruns), after validating and checkpointing")
    p.add_argument("--stop-after", type=int, default=None, metavar="EPOCHS",
                   help="stop once this many epochs are done (as if killed); resume later")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    p.add_argument("--num-seeds", type=int, default=None, metavar="S",
                   help="train S independent meta-learners (seeds seed..seed+S-1) at once "
                        "(= --set num_seeds=S)")
    g = p.add_argument_group(
        "several processes (jax.distributed), e.g. one per host; default from the "
        "environment: " + ", ".join(_DIST_ENV.values()))
    g.add_argument("--coordinator-address", default=None, metavar="HOST:PORT",
                   help="process 0's address, reachable from every process")
    g.add_argument("--num-processes", type=int, default=None)
    g.add_argument("--process-id", type=int, default=None)
    return p


_DIST_ENV = {"coordinator_address": "JAX_COORDINATOR_ADDRESS",
             "num_processes": "JAX_NUM_PROCESSES", "process_id": "JAX_PROCESS_ID"}


def distributed_settings(args: argparse.Namespace) -> dict[str, Any] | None:
    """The ``jax.distributed.initialize`` arguments from flags (else the environment), or
    None for a single process. Raises ConfigError for incomplete or impossible settings."""
    import os
    out = {}
    for key, env in _DIST_ENV.items():
        value = getattr(args, key)
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
    args = build_parser().parse_args(argv)
    try:
        init_distributed(distributed_settings(args))
        overrides = list(args.set) + ([] if args.num_seeds is None else
                                      [f"num_seeds={args.num_seeds}"])
        cfg = validate_config(apply_overrides(load_config(args.config), overrides))
        workdir = args.workdir or str(pathlib.Path("runs") / cfg["name"])
        summary = run_training(cfg, workdir, data_dir=args.data_dir, resume=args.resume,
                               stop_after=args.stop_after, max_minutes=args.max_minutes,
                               progress=not args.no_progress)
    except (ConfigError, common.DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except meta.NonFiniteLossError as err:
        print(f"error: {err}", file=sys.stderr)
        return 3
    print(json.dumps({"workdir": workdir, **summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
