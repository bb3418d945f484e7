"""Sinusoid regression: meta-train MAML and MAML++ and compare them (``make demo``).

    python -m experiments.sinusoid --config=experiments/configs/sinusoid_demo.py \\
        [--config.KEY=VALUE ...] [--workdir=runs/sinusoid_demo] [--iterations=N] [--no-progress]

``--config`` is a config file (``FILE.py[:variant]``, e.g. ``sinusoid_paper.py:smoke``)
whose ``get_config()`` returns ``sinusoid_config(...)``; ``--config.iterations=2000``
overrides a top-level key.

Writes ``results.json``, ``results.md`` and three plots into the workdir: the query loss
after each inner step (MAML vs MAML++), the spread of per-task final losses, and the
learned inner learning rates of MAML++ per layer and step.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import platform
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags
from ml_collections import config_dict

import maml_jax as mj
from experiments import flag_parsing
from experiments.config_lib import ConfigError


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
    inner_lr_update: str = "additive"    # meta.INNER_LR_UPDATES: "additive" (reference) | "log"
    inner_loop: str = "all"              # "all" | "head" (ANIL: only the output layer adapts)
    inner_grad_clip: float | None = None  # inner-gradient global-norm clip (None: no clip)


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


def _config_dict(fields: dict[str, Any]) -> config_dict.ConfigDict:
    # None-valued fields (clip_value, inner_lr_scale) become float placeholders, so that
    # ``--config.KEY=VALUE`` can set them.
    return config_dict.ConfigDict(
        {k: config_dict.placeholder(float) if v is None else v for k, v in fields.items()})


def method_config(**fields) -> config_dict.ConfigDict:
    """One method of a sinusoid config file, as a ConfigDict (``MethodConfig``'s fields).

    Example:
        >>> method_config(name="MAML", num_inner_steps=1, inner_lr=0.01, granularity="scalar",
        ...               learn_inner_lrs=False, msl=False).msl_epochs
        10
    """
    return _config_dict(dataclasses.asdict(MethodConfig(**fields)))


def sinusoid_config(methods, **fields) -> config_dict.ConfigDict:
    """A sinusoid config file's ``get_config()`` value: ``SinusoidConfig``'s fields, locked.

    ``methods``: ``method_config`` values. Top-level keys are overridden from the command
    line (``--config.iterations=2000``), a method's inside the tuple is not.
    """
    cfg = _config_dict({**dataclasses.asdict(SinusoidConfig(methods=(), **fields)),
                        "methods": tuple(methods)})
    cfg.lock()
    return cfg


def from_config_dict(config: config_dict.ConfigDict) -> SinusoidConfig:
    """The typed ``SinusoidConfig`` of a config file's ConfigDict (``ConfigError`` if it
    names unknown keys)."""
    raw = config.to_dict()
    fields = {f.name for f in dataclasses.fields(SinusoidConfig)}
    method_fields = {f.name for f in dataclasses.fields(MethodConfig)}
    unknown = sorted(set(raw) - fields) + sorted(
        {k for m in raw.get("methods", ()) for k in m} - method_fields)
    if unknown:
        raise ConfigError(f"unknown sinusoid config keys {unknown}")
    methods = tuple(MethodConfig(**{k: m[k] for k in m}) for m in raw.pop("methods", ()))
    raw = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
    return SinusoidConfig(methods=methods, **raw)


def load_config(path: str | os.PathLike, overrides=()) -> SinusoidConfig:
    """Loads a config file (``FILE.py[:arg]``) as the scripts' ``--config`` flag does.

    ``overrides``: ``--config.KEY=VALUE`` arguments. Raises ``SystemExit`` with the
    reason if it is not a sinusoid config.
    """
    try:
        return from_config_dict(flag_parsing.config_from_flags(
            [f"--config={path}", *overrides]))
    except ConfigError as err:
        raise SystemExit(f"error: {err}") from None


def _meta_config(cfg: SinusoidConfig, m: MethodConfig) -> mj.MetaConfig:
    return mj.MetaConfig(
        num_inner_steps=m.num_inner_steps, msl=m.msl, msl_epochs=m.msl_epochs,
        first_order_epochs=m.first_order_epochs, learn_inner_lrs=m.learn_inner_lrs,
        iterations_per_epoch=cfg.iterations_per_epoch,
        # A 40-unit MLP has no convolutions: vmap over tasks is fastest on every backend.
        task_batching="vmap", inner_grad_clip=m.inner_grad_clip)


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
    if m.inner_loop not in ("all", "head"):
        raise ConfigError(f"{m.name}: inner_loop must be 'all' or 'head', got {m.inner_loop!r}")
    mask = mj.inner_loop_mask(params, only="head") if m.inner_loop == "head" else None
    lrs = mj.init_inner_lrs(params, m.num_inner_steps, m.inner_lr, m.granularity, mask=mask)
    total_epochs = max(1, cfg.iterations // cfg.iterations_per_epoch)
    lr = (mj.meta_lr_schedule(cfg.meta_lr, m.min_meta_lr, total_epochs,
                              cfg.iterations_per_epoch) if m.cosine else cfg.meta_lr)
    optimizer = mj.make_meta_optimizer(lr, clip_value=m.clip_value,
                                       inner_lr_scale=m.inner_lr_scale,
                                       inner_lr_update=m.inner_lr_update)
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


def evaluate_method(cfg: SinusoidConfig, meta_params: Any,
                    inner_grad_clip: float | None = None) -> dict[int, np.ndarray]:
    """Per-task query MSE after 0..max(eval_steps) inner steps, for every eval shot count.

    ``inner_grad_clip``: the method's (``MethodConfig.inner_grad_clip``): evaluation adapts
    as meta-training did.
    """
    loss_fn = mj.make_loss_fn(mj.MLP(hidden=cfg.hidden), "mse")
    max_steps = max(cfg.eval_steps)
    out = {}
    for k in cfg.eval_shots:
        tasks = mj.sinusoid_eval_tasks(cfg.seed + 1000, cfg.num_eval_tasks, k,
                                       cfg.eval_query_points)
        losses, _ = mj.jit_evaluate_tasks(loss_fn, meta_params["params"],
                                          meta_params["inner_lrs"], tasks, num_steps=max_steps,
                                          inner_grad_clip=inner_grad_clip)
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
    for ax, k in zip(axes, cfg.eval_shots, strict=True):
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
        for path, value in flat:
            leaf = np.atleast_1d(np.asarray(value))
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


def define_flags() -> flags.FlagValues:
    """The script's flags on a fresh ``FlagValues`` (see ``experiments.flag_parsing``)."""
    fv = flags.FlagValues()
    flags.DEFINE_string("config", "experiments/configs/sinusoid_demo.py",
                        "sinusoid config file, FILE.py[:variant]; override its keys with "
                        "--config.KEY=VALUE", flag_values=fv)
    flags.DEFINE_string("workdir", None, "output directory (default runs/<config file name>)",
                        flag_values=fv)
    flags.DEFINE_integer("iterations", None, "override the config's iterations",
                         flag_values=fv)
    flags.DEFINE_bool("no-progress", False, "no tqdm progress bar", flag_values=fv)
    return fv


def main(argv: list[str] | None = None) -> dict:
    """``python -m experiments.sinusoid``; returns the results (``SystemExit`` on bad input).

    Example:
        >>> main(["--config=experiments/configs/sinusoid_paper.py:smoke", "--workdir=/tmp/s",
        ...       "--no-progress"])["train_seconds"].keys()  # doctest: +SKIP
        dict_keys(['MAML', 'MAML++'])
    """
    full = flag_parsing.program_argv("python -m experiments.sinusoid", argv)
    # --config.KEY=VALUE go to the config (load_config); the other flags are parsed here.
    overrides = [a for a in full[1:] if a.startswith(("--config.", "-config."))]
    fv = define_flags()
    try:
        if flag_parsing.parse_or_help(fv, [a for a in full if a not in overrides],
                                      __doc__) is None:
            return {}
    except ConfigError as err:
        raise SystemExit(f"error: {err}") from None
    cfg = load_config(fv["config"].value, overrides)
    iterations = fv["iterations"].value
    if iterations is not None:
        if iterations < 1:
            raise SystemExit("--iterations must be >= 1")
        cfg = dataclasses.replace(cfg, iterations=iterations)
    config_path = fv["config"].value.split(":", 1)[0]
    progress = not fv["no-progress"].value
    workdir = pathlib.Path(fv["workdir"].value or f"runs/{pathlib.Path(config_path).stem}")
    workdir.mkdir(parents=True, exist_ok=True)

    print(f"sinusoid: {cfg.iterations} meta-iterations per method, meta-batch "
          f"{cfg.meta_batch_size}, K={cfg.k_train}; device {jax.devices()[0].device_kind}")
    evals, learned, timings, logs = {}, {}, {}, {}
    for m in cfg.methods:
        meta_params, log, seconds = train_method(cfg, m, progress=progress)
        evals[m.name] = evaluate_method(cfg, meta_params, m.inner_grad_clip)
        timings[m.name] = seconds
        logs[m.name] = log
        if m.learn_inner_lrs:
            learned[m.name] = jax.device_get(meta_params["inner_lrs"])

    table = results_table(cfg, evals)
    plots = make_plots(cfg, evals, learned, workdir)
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, " \
              f"jax {jax.__version__} on {jax.devices()[0].device_kind}"
    command = "python -m experiments.sinusoid " + " ".join(argv if argv is not None
                                                          else sys.argv[1:])
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
    from experiments import sinusoid as _self  # noqa: PLW0406 - deliberate, see above
    _self.main()
