"""Sinusoid regression: meta-train MAML and MAML++ and compare them (``make demo``).

    python -m experiments.sinusoid --config experiments/configs/sinusoid_demo.py \
        [--workdir runs/sinusoid_demo] [--iterations N]

Writes ``results.json``, ``results.md`` and three plots into the workdir: the query loss
after each inner step (MAML vs MAML++), the spread of per-task final losses, and the
learned inner learning rates of MAML++ per layer and step.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import platform
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

import maml_jax as mj
from experiments.config_lib import ConfigError, call_get_config


@dataclasses.dataclass(frozen=True)
class MethodConfig:
    """One meta-learner of the comparison."""

    name: str
    num_inner_steps: int
    inner_lr: float
    granularity: str
    learn_inner_lrs: bool
    msl: bool
    msl_epochs: int = 10
    cosine: bool = False
    min_meta_lr: float = 1e-5
    first_order_epochs: int = 0
    clip_value: float | None = None  # element-wise meta-gradient clipping (optax.clip)
    inner_lr_scale: float | None = None  # meta learning rate of the inner rates, relative


@dataclasses.dataclass(frozen=True)
class SinusoidConfig:
    """A sinusoid experiment: shared task/optimiser settings and the methods compared."""

    methods: tuple[MethodConfig, ...]
    iterations: int = 70_000
    iterations_per_epoch: int = 1_000
    meta_batch_size: int = 25
    k_train: int = 10
    meta_lr: float = 1e-3
    hidden: tuple[int, ...] = (40, 40)
    eval_shots: tuple[int, ...] = (5, 10)
    eval_steps: tuple[int, ...] = (1, 5, 10)
    num_eval_tasks: int = 600
    eval_query_points: int = 100
    steps_per_call: int = 500
    seed: int = 0
    paper: str = ""


def load_config(path: str | os.PathLike) -> SinusoidConfig:
    """Imports ``get_config()`` from a config file; a clear error if it is not one."""
    try:
        cfg = call_get_config(path)
    except ConfigError as err:
        raise SystemExit(str(err)) from None
    if not isinstance(cfg, SinusoidConfig):
        raise SystemExit(f"{path}: get_config() must return an experiments.sinusoid.SinusoidConfig")
    return cfg


def _meta_config(cfg: SinusoidConfig, m: MethodConfig) -> mj.MetaConfig:
    return mj.MetaConfig(
        num_inner_steps=m.num_inner_steps, msl=m.msl, msl_epochs=m.msl_epochs,
        first_order_epochs=m.first_order_epochs, learn_inner_lrs=m.learn_inner_lrs,
        iterations_per_epoch=cfg.iterations_per_epoch,
        # A 40-unit MLP has no convolutions: vmap over tasks is fastest on every backend.
        task_batching="vmap")


def train_method(cfg: SinusoidConfig, m: MethodConfig, progress: bool = True,
                 on_chunk: Callable[[int, Any], None] | None = None):
    """Meta-trains one method; returns ``(meta_params, per-step train-loss log, seconds)``.

    ``on_chunk(iterations_done, meta_params)``, if given, is called after every host call
    (every ``steps_per_call`` iterations, and once before the first; the study records the
    learned rates through training with it).
    """
    model = mj.MLP(hidden=cfg.hidden)
    loss_fn = mj.make_loss_fn(model, "mse")
    root = jax.random.PRNGKey(cfg.seed)
    init_key, run_key = jax.random.split(root)
    params = model.init(init_key, jnp.zeros((1, 1)))["params"]
    lrs = mj.init_inner_lrs(params, m.num_inner_steps, m.inner_lr, m.granularity)
    total_epochs = max(1, cfg.iterations // cfg.iterations_per_epoch)
    lr = (mj.meta_lr_schedule(cfg.meta_lr, m.min_meta_lr, total_epochs,
                              cfg.iterations_per_epoch) if m.cosine else cfg.meta_lr)
    optimizer = mj.make_meta_optimizer(lr, clip_value=m.clip_value,
                                       inner_lr_scale=m.inner_lr_scale)
    config = _meta_config(cfg, m)
    state = mj.init_meta_state(params, lrs, optimizer, run_key)

    def sample(key, data):
        del data
        return mj.sample_sinusoid_tasks(key, cfg.meta_batch_size, cfg.k_train, cfg.k_train)

    chunk = _divisor_at_most(cfg.iterations_per_epoch, cfg.steps_per_call)
    log = []
    bar = _progress(cfg.iterations, f"{m.name:8s}", progress)
    start = time.perf_counter()
    done = 0
    if on_chunk is not None:
        on_chunk(0, state.meta_params)
    while done < cfg.iterations:
        n = min(chunk, cfg.iterations - done)
        first_order, msl = mj.phase(config, done // cfg.iterations_per_epoch)
        state, metrics = mj.jit_train_steps(
            state, None, sample_tasks=sample, num_steps=n, loss_fn=loss_fn,
            optimizer=optimizer, config=config, first_order=first_order, msl=msl)
        metrics = jax.device_get(metrics)
        mj.check_finite(metrics, done)
        done += n
        log.append({"iteration": done, "loss": float(np.mean(metrics["loss"]))})
        if on_chunk is not None:
            on_chunk(done, state.meta_params)
        bar.update(n)
        bar.set_postfix(loss=f"{log[-1]['loss']:.3f}")
    bar.close()
    return state.meta_params, log, time.perf_counter() - start


def _divisor_at_most(n: int, k: int) -> int:
    """The largest divisor of ``n`` that is <= ``k``: phase switches land on epoch edges."""
    return max(d for d in range(1, min(n, k) + 1) if n % d == 0)


def _progress(total: int, desc: str, enabled: bool):
    try:
        from tqdm import tqdm
        return tqdm(total=total, desc=desc, disable=not enabled, unit="it", dynamic_ncols=True)
    except ImportError:  # tqdm is in requirements.txt; this keeps the library importable
        class _Null:
            def update(self, n): pass
            def set_postfix(self, **kw): pass
            def close(self): pass
        return _Null()


def evaluate_method(cfg: SinusoidConfig, meta_params: Any) -> dict[int, np.ndarray]:
    """Per-task query MSE after 0..max(eval_steps) inner steps, for every eval shot count."""
    loss_fn = mj.make_loss_fn(mj.MLP(hidden=cfg.hidden), "mse")
    max_steps = max(cfg.eval_steps)
    out = {}
    for k in cfg.eval_shots:
        tasks = mj.sinusoid_eval_tasks(cfg.seed + 1000, cfg.num_eval_tasks, k,
                                       cfg.eval_query_points)
        losses, _ = mj.jit_evaluate_tasks(loss_fn, meta_params["params"],
                                          meta_params["inner_lrs"], tasks, num_steps=max_steps)
        out[k] = np.asarray(losses)
    return out


def results_table(cfg: SinusoidConfig, evals: dict[str, dict[int, np.ndarray]]) -> str:
    """A markdown table of mean ± 95% CI query MSE."""
    head = "| method | K | " + " | ".join(f"{s} step{'' if s == 1 else 's'}"
                                         for s in cfg.eval_steps) + " |"
    lines = [head, "|" + "---|" * (2 + len(cfg.eval_steps))]
    for name, ev in evals.items():
        for k, losses in ev.items():
            cells = []
            for s in cfg.eval_steps:
                mean, ci = mj.mean_ci95(losses[:, s])
                cells.append(f"{mean:.3f} ± {ci:.3f}")
            lines.append(f"| {name} | {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def make_plots(cfg: SinusoidConfig, evals, learned_lrs, workdir: pathlib.Path) -> list[str]:
    """Writes the three PNGs; returns their file names."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    fig, axes = plt.subplots(1, len(cfg.eval_shots), figsize=(5 * len(cfg.eval_shots), 4))
    axes = np.atleast_1d(axes)
    for ax, k in zip(axes, cfg.eval_shots):
        for name, ev in evals.items():
            mean, ci = mj.mean_ci95(ev[k], axis=0)
            steps = np.arange(len(mean))
            ax.plot(steps, mean, marker="o", label=name)
            ax.fill_between(steps, mean - ci, mean + ci, alpha=0.2)
        ax.set_yscale("log")
        ax.set(title=f"{k}-shot: query MSE after each inner step", xlabel="inner steps",
               ylabel="query MSE (600 test tasks, 95% CI)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(workdir / "trajectory.png", dpi=120)
    plt.close(fig)
    files.append("trajectory.png")

    k = max(cfg.eval_shots)
    s = max(cfg.eval_steps)
    fig, ax = plt.subplots(figsize=(5, 4))
    names = list(evals)
    ax.boxplot([evals[n][k][:, s] for n in names], showfliers=True)
    ax.set_xticks(range(1, len(names) + 1), names)
    ax.set_yscale("log")
    ax.set(title=f"per-task query MSE, {k}-shot, {s} steps", ylabel="query MSE")
    fig.tight_layout()
    fig.savefig(workdir / "final_loss_spread.png", dpi=120)
    plt.close(fig)
    files.append("final_loss_spread.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, lrs in learned_lrs.items():
        flat = jax.tree_util.tree_flatten_with_path(lrs)[0]
        for path, leaf in flat:
            leaf = np.atleast_1d(np.asarray(leaf))
            label = "/".join(str(getattr(p, "key", p)) for p in path)
            ax.plot(np.arange(1, len(leaf) + 1), leaf, marker="o", label=f"{name}: {label}")
    ax.set(title="learned inner learning rate per layer and step", xlabel="inner step",
           ylabel="alpha")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(workdir / "learned_inner_lrs.png", dpi=120)
    plt.close(fig)
    files.append("learned_inner_lrs.png")
    return files


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="experiments/configs/sinusoid_demo.py")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--iterations", type=int, default=None, help="override the config")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    cfg = load_config(args.config)
    if args.iterations is not None:
        if args.iterations < 1:
            raise SystemExit("--iterations must be >= 1")
        cfg = dataclasses.replace(cfg, iterations=args.iterations)
    workdir = pathlib.Path(args.workdir or f"runs/{pathlib.Path(args.config).stem}")
    workdir.mkdir(parents=True, exist_ok=True)

    print(f"sinusoid: {cfg.iterations} meta-iterations per method, meta-batch "
          f"{cfg.meta_batch_size}, K={cfg.k_train}; device {jax.devices()[0].device_kind}")
    evals, learned, timings, logs = {}, {}, {}, {}
    for m in cfg.methods:
        meta_params, log, seconds = train_method(cfg, m, progress=not args.no_progress)
        evals[m.name] = evaluate_method(cfg, meta_params)
        timings[m.name] = seconds
        logs[m.name] = log
        if m.learn_inner_lrs:
            learned[m.name] = jax.device_get(meta_params["inner_lrs"])

    table = results_table(cfg, evals)
    plots = make_plots(cfg, evals, learned, workdir)
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, " \
              f"jax {jax.__version__} on {jax.devices()[0].device_kind}"
    command = "python -m experiments.sinusoid " + " ".join(argv if argv is not None else sys.argv[1:])
    md = [f"# Sinusoid results ({stamp})", "", f"Command: `{command}`", f"Machine: {machine}",
          "", "Query MSE on the fixed test tasks (mean ± 95% CI):", "", table, "",
          "Training time: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()),
          "", cfg.paper]
    (workdir / "results.md").write_text("\n".join(md) + "\n")
    result = {
        "date": stamp, "command": command, "machine": machine,
        "config": dataclasses.asdict(cfg),
        "train_seconds": timings, "train_log": logs,
        "test_mse": {name: {str(k): {str(s): list(mj.mean_ci95(v[:, s]))
                                     for s in cfg.eval_steps} for k, v in ev.items()}
                     for name, ev in evals.items()},
        "plots": plots,
    }
    (workdir / "results.json").write_text(json.dumps(result, indent=1, default=float))
    print("\n" + table)
    print(f"\nwrote {workdir}/results.md, results.json and " + ", ".join(plots))
    return result


if __name__ == "__main__":
    # Run the importable module's main, so configs (which import experiments.sinusoid)
    # and this script share one SinusoidConfig class.
    from experiments import sinusoid as _self
    _self.main()
