"""MAML++ Conv4 outer step: maml_jax vs every PyTorch formulation, same process.

PyTorch rows (``--torch-formulations``): tasks in sequence (the reference code's way),
``torch.vmap`` over tasks with ``torch.func.grad`` inner steps (the PyTorch documentation's
MAML example; the strongest eager formulation), and that under ``torch.compile`` (mode
``reduce-overhead`` on CUDA); a formulation that fails to compile gets a row with its
error.

Examples:
  python benchmarks/bench.py --quick --out benchmarks/results/cpu_quick.json
  python benchmarks/bench.py --settings omniglot_20w1s,omniglot_5w1s --orders second \\
      --jax-variants auto,patches:vmap:1,xla:vmap:1 --train-steps 10 --out $OUT/gpu.json
  python benchmarks/bench.py --scaling steps --settings omniglot_5w1s --out steps.json

A JAX variant is ``conv:batching:unroll[:remat][:pool=P][:groups=G]`` (``auto:auto:auto``
= the library's defaults, e.g. ``xla:map:1``, ``patches:vmap:true``,
``auto:auto:auto:remat``, ``auto:auto:auto:pool=reduce_window``,
``auto:auto:auto:groups=2`` for ``MetaConfig(task_groups=2)``; ``pool=max_wrong`` times
the earlier reshape + max pool, whose gradients are wrong, for comparison only; ``conv``
may also name a benchmark-only layout of ``_CONV_OVERRIDES``). Rows are
timed round-robin (in each round every runner in turn takes an untimed step, then a timed
one: ``--untimed-per-turn``) so that all frameworks see the same machine load. Compile =
``lower().compile()`` for JAX, the first step for PyTorch.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import statistics
import sys
import threading

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [_HERE, os.path.dirname(_HERE)]

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import jax_setup  # noqa: E402
import numpy as np  # noqa: E402
import timing  # noqa: E402
from timing import cpu_name  # noqa: E402

from maml_jax import meta, models, parallel  # noqa: E402


# ---------------------------------------------------------------------------- memory
def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


class RssPeak:
    """Samples the process RSS in a thread; ``delta`` = peak during the block - at entry."""

    def __enter__(self):
        self.start = self.peak = _rss_bytes()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _rss_bytes())

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, _rss_bytes())
        self.delta = self.peak - self.start


# ---------------------------------------------------------------------------- runners
class JaxRunner:
    framework = "jax"

    def __init__(self, s: jax_setup.Setting, variant: str, train_steps: int = 0):
        parts = [q for q in variant.split(":") if "=" not in q]
        options = dict(q.split("=", 1) for q in variant.split(":") if "=" in q)
        if set(options) - {"pool", "groups"}:
            raise ValueError(f"unknown option in variant {variant!r}: expected pool=, groups=")
        pool = options.get("pool", "select")
        if pool not in ("select", "reduce_window", "max_wrong"):
            raise ValueError(f"unknown pool {pool!r} in variant {variant!r}")
        conv, batching, unroll = (parts + ["auto"] * 3)[:3]
        self.remat = len(parts) > 3 and parts[3] == "remat"
        unroll = unroll if unroll == "auto" else (
            {"true": True, "false": False}[unroll.lower()] if unroll.lower() in ("true", "false")
            else int(unroll))
        self.s, self.variant, self.k = s, variant, train_steps
        # "rows3", "shift9", "outshift": experimental patches layouts (_CONV_OVERRIDES),
        # swapped in for models.conv3x3_patches while tracing; benchmark-only.
        self.conv_override = _CONV_OVERRIDES.get(conv)
        # "max_wrong": the earlier reshape + jnp.max pool, whose derivatives XLA:CPU gets
        # wrong (benchmarks/repro); timed only to show what the correct pool costs.
        self.pool_override = _max_wrong if pool == "max_wrong" else None
        _, self.state, _step_fn, kw = jax_setup.build(
            s, conv_impl=None if conv == "auto" else (
                "patches" if conv in _CONV_OVERRIDES else conv),
            task_batching=batching, task_groups=int(options.get("groups", 1)),
            remat=self.remat, unroll=unroll,
            pool_impl="reduce_window" if pool == "reduce_window" else None)
        self.name = f"jax {variant}" + (f" x{train_steps}/call" if train_steps else "")
        self.device = jax.devices()[0]
        self.steps_per_call = max(1, train_steps)
        tasks = jax_setup.make_tasks(s)
        if train_steps:
            pool = jax.device_put(
                jax_setup.make_tasks(dataclasses.replace(s, meta_batch=4 * s.meta_batch)))
            mb = s.meta_batch

            def sample_tasks(key, data):
                idx = jax.random.randint(key, (mb,), 0, 4 * mb)
                return jax.tree.map(lambda a: a[idx], data)

            self.args = (pool,)
            self._lower = lambda st: parallel.jit_train_steps.lower(
                st, pool, sample_tasks=sample_tasks, num_steps=train_steps, **_static(kw, s))
        else:
            self.args = (jax.device_put(tasks),)
            self._lower = lambda st: meta.jit_outer_step.lower(st, self.args[0], **_static(kw, s))

    def compile(self) -> float:
        from maml_jax import models
        saved = models.conv3x3_patches, models.max_pool_2x2
        if self.conv_override is not None:
            models.conv3x3_patches = self.conv_override
        if self.pool_override is not None:
            models.max_pool_2x2 = self.pool_override
        try:
            self.exe, seconds = timing.timed(lambda: self._lower(self.state).compile())
            return seconds
        finally:
            models.conv3x3_patches, models.max_pool_2x2 = saved

    def step(self):
        self.state, m = self.exe(self.state, *self.args)
        jax.block_until_ready((self.state, m))
        return float(np.mean(np.asarray(m["loss"])))

    def device_name(self) -> str:
        d = self.device
        return cpu_name() if d.platform == "cpu" else f"{d.device_kind}"

    def peak_bytes(self):
        try:
            stats = self.device.memory_stats() or {}
        except Exception:
            stats = {}
        return stats.get("peak_bytes_in_use")


def _rows3(x, kernel):
    """3x3 'SAME' conv as a (dx, cin) im2col of width 3*cin and 3 matmuls over dy."""
    _, _, cin, cout = kernel.shape
    n, h, w, _ = x.shape
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    cols = jnp.concatenate([xp[:, :, dx:dx + w, :] for dx in range(3)], axis=-1)
    y = 0
    for dy in range(3):
        y = y + jnp.dot(cols[:, dy:dy + h].reshape(-1, 3 * cin),
                        kernel[dy].reshape(3 * cin, cout))
    return y.reshape(n, h, w, cout)


def _shift9(x, kernel):
    """3x3 'SAME' conv as nine matmuls of shifted views of the padded input, summed (no
    patches tensor)."""
    _, _, cin, cout = kernel.shape
    n, h, w, _ = x.shape
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    y = 0
    for dy in range(3):
        for dx in range(3):
            y = y + jnp.dot(xp[:, dy:dy + h, dx:dx + w, :].reshape(-1, cin), kernel[dy, dx])
    return y.reshape(n, h, w, cout)


def _outshift(x, kernel):
    """3x3 'SAME' conv as one matmul of the padded input with all nine taps side by side
    (``cin x 9 cout``), then a sum of nine shifted views of its output: the im2col's
    gather moved from the input to the output side."""
    _, _, cin, cout = kernel.shape
    n, h, w, _ = x.shape
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    taps = kernel.transpose(2, 0, 1, 3).reshape(cin, 9 * cout)
    z = jnp.dot(xp.reshape(-1, cin), taps).reshape(n, h + 2, w + 2, 9, cout)
    return sum(z[:, dy:dy + h, dx:dx + w, 3 * dy + dx] for dy in range(3) for dx in range(3))


# The library's im2col convolution (models.conv3x3_patches is swapped while tracing).
_IM2COL = models.conv3x3_patches


@jax.custom_vjp
def _vjp(x, kernel):
    """The library's im2col convolution with a hand-written derivative: the input's
    gradient as the SAME 3x3 convolution of the output's gradient with the kernel turned
    180 degrees and its channel axes swapped (an im2col + matmul again, also in every
    higher derivative), instead of autodiff's scatter of the patches' gradient (nine pads
    and slices summed)."""
    return _IM2COL(x, kernel)


def _vjp_fwd(x, kernel):
    return _IM2COL(x, kernel), (x, kernel)


def _vjp_bwd(res, dy):
    x, kernel = res
    kh, kw, cin, cout = kernel.shape
    dx = _vjp(dy, jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2))
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    n, h, w, _ = x.shape
    patches = jnp.concatenate([xp[:, i:i + h, j:j + w] for i in range(kh) for j in range(kw)],
                              axis=-1).reshape(n * h * w, kh * kw * cin)
    dk = jnp.dot(patches.T, dy.reshape(n * h * w, cout)).reshape(kernel.shape)
    return dx, dk


_vjp.defvjp(_vjp_fwd, _vjp_bwd)

# Benchmark-only conv layouts, each computing models.conv3x3_patches's convolution; swapped
# in while tracing by a variant whose first part names one ("rows3:vmap:auto").
_CONV_OVERRIDES = {"rows3": _rows3, "shift9": _shift9, "outshift": _outshift, "vjp": _vjp}


def _max_wrong(x):
    """The earlier max-pool (reshape + jnp.max): wrong derivatives on XLA:CPU."""
    n, h, w, c = x.shape
    x = x[:, :h // 2 * 2, :w // 2 * 2]
    return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def _static(kw, s):
    return dict(loss_fn=kw["loss_fn"], optimizer=kw["optimizer"], config=kw["config"],
                phase=(s.first_order, s.msl))


class TorchRunner:
    """One PyTorch formulation of the step (``torch_maml.FORMULATIONS``): tasks in sequence
    (the reference code's way), ``torch.vmap`` over tasks, or that under ``torch.compile``
    (mode ``reduce-overhead`` on CUDA)."""

    framework = "torch"

    def __init__(self, s: jax_setup.Setting, params, inner_lrs, device: str, threads: int = 0,
                 formulation: str = "sequential"):
        import torch
        import torch_maml

        self.torch = torch
        self.s, self.dev = s, device
        p, a = torch_maml.params_from_jax(params, inner_lrs, device=device)
        self.tasks = torch_maml.tasks_to_torch(jax_setup.make_tasks(s), device=device)
        self.model = torch_maml.TorchMAMLpp(
            p, a, num_steps=s.inner_steps, first_order=s.first_order, msl=s.msl,
            formulation=formulation,
            compile_mode="reduce-overhead" if device.startswith("cuda") else None)
        self.threads = threads or torch.get_num_threads()
        self.name = f"torch {formulation}" + (f" ({self.threads} threads)" if device == "cpu"
                                              else "")
        self.steps_per_call = 1

    def _sync(self):
        if self.dev.startswith("cuda"):
            self.torch.cuda.synchronize()

    def compile(self) -> float:
        self.first_loss, seconds = timing.timed(self.step)   # PyTorch's first step
        return seconds

    def step(self):
        if self.dev == "cpu":
            self.torch.set_num_threads(self.threads)
        loss = self.model.step(self.tasks)
        self._sync()
        return float(loss)

    def device_name(self) -> str:
        if self.dev.startswith("cuda"):
            return self.torch.cuda.get_device_name()
        return cpu_name()

    def reset_peak(self):
        if self.dev.startswith("cuda"):
            self.torch.cuda.reset_peak_memory_stats()

    def peak_bytes(self):
        if self.dev.startswith("cuda"):
            return self.torch.cuda.max_memory_allocated()
        return None


# ---------------------------------------------------------------------------- driver
def run_setting(s, args, label):
    runners = []
    for v in args.jax_variants:
        runners.append(JaxRunner(s, v))
    if args.train_steps:
        runners.append(JaxRunner(s, args.jax_variants[0], train_steps=args.train_steps))
    if "torch" in args.frameworks:
        try:
            import torch
            dev = "cuda" if torch.cuda.is_available() else "cpu"
            ref = runners[0].state.meta_params if runners else None
            if ref is None:
                _, st, _, _ = jax_setup.build(s)
                ref = st.meta_params
            for th in (args.torch_threads if dev == "cpu" else [0]):
                for formulation in args.torch_formulations:
                    runners.append(TorchRunner(s, jax.device_get(ref["params"]),
                                               jax.device_get(ref["inner_lrs"]), dev, th,
                                               formulation))
        except ImportError:
            print("torch not installed: PyTorch rows skipped", file=sys.stderr)
    rows = []
    info = {}
    failed = []
    for r in runners:
        if isinstance(r, TorchRunner):
            r.reset_peak()
        try:
            with RssPeak() as mem:
                c = r.compile()
                first = r.step()  # warm-up
                first = getattr(r, "first_loss", first)
        except Exception as err:   # a formulation that does not compile
            # (torch.compile of a vmapped second-order step, say) is a result: its row
            # records the error instead of a time.
            message = f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"
            print(f"[{label}] {r.name}: FAILED {message}", file=sys.stderr, flush=True)
            rows.append({"setting": label, "framework": r.name, "error": message,
                         "device": r.device_name()})
            failed.append(r)
            continue
        info[r.name] = {"compile_s": c, "rss": mem.delta, "first_loss": first, "times": []}
        print(f"[{label}] {r.name}: compile/warm-up {c:.2f}s", file=sys.stderr, flush=True)
    runners = [r for r in runners if r not in failed]
    for _ in timing.rounds(args.repeats, max_seconds=args.max_seconds):
        for r in runners:
            # An untimed step first in each turn: a step right after another framework's
            # runs against memory that one freed (returned to the OS and faulted in again:
            # a maml_jax step after the vmapped PyTorch one was measured 1.8x slower), which
            # says nothing about a training loop, where one framework runs step after step.
            for _ in range(args.untimed_per_turn):
                r.step()
            with RssPeak() as mem:
                info[r.name]["times"].append(timing.timed(r.step)[1])
            info[r.name]["rss"] = max(info[r.name]["rss"], mem.delta)
    for r in runners:
        d = info[r.name]
        med = statistics.median(d["times"])
        steps_s = r.steps_per_call / med
        peak = r.peak_bytes()
        mem = (f"{peak / 2**20:.0f} MiB (device peak)" if peak is not None
               else f"{d['rss'] / 2**20:.0f} MiB (host RSS delta)")
        rows.append({
            "setting": label, "framework": r.name, "compile_s": round(d["compile_s"], 2),
            "meta_steps_per_s": round(steps_s, 3), "tasks_per_s": round(steps_s * s.meta_batch, 2),
            "step_ms_median": round(1e3 * med / r.steps_per_call, 1),
            "step_ms_min": round(1e3 * min(d["times"]) / r.steps_per_call, 1),
            "repeats": len(d["times"]), "memory": mem, "peak_bytes": peak,
            "rss_delta_bytes": d["rss"], "device": r.device_name(),
            "first_loss": round(d["first_loss"], 5),
        })
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def _set_precision(precision: str, with_torch: bool) -> None:
    """The float32 matmul/convolution precision of both frameworks (TF32 or full)."""
    jax.config.update("jax_default_matmul_precision",
                      None if precision == "default" else "highest")
    if with_torch:
        try:
            import torch
        except ImportError:
            return
        tf32 = precision == "default"
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32


def markdown(rows) -> str:
    head = ("| setting | framework | compile / warm-up (s) | meta-steps/s | tasks/s | "
            "step ms (median / min, n) | peak memory | device |")
    out = [head, "|" + "---|" * 8]
    for r in rows:
        if "error" in r:
            out.append(f"| {r['setting']} | {r['framework']} | failed: {r['error']} | - | - "
                       f"| - | - | {r['device']} |")
            continue
        out.append(f"| {r['setting']} | {r['framework']} | {r['compile_s']} | "
                   f"{r['meta_steps_per_s']} | {r['tasks_per_s']} | {r['step_ms_median']} / "
                   f"{r['step_ms_min']}, {r['repeats']} | {r['memory']} | {r['device']} |")
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--settings", default="omniglot_5w1s")
    ap.add_argument("--orders", default="second", help="first,second")
    ap.add_argument("--no-msl", action="store_true", help="final-step loss only")
    ap.add_argument("--frameworks", default="jax,torch")
    ap.add_argument("--jax-variants", default="auto:auto:auto")
    ap.add_argument("--torch-threads", default="0",
                    help="CPU: comma-separated torch thread counts, one row each "
                         "(0 = torch's default)")
    ap.add_argument("--torch-formulations", default="sequential,vmap,vmap+compile",
                    help="PyTorch steps to time, each a row: tasks in sequence (the "
                         "reference code's), torch.vmap over tasks, and that under "
                         "torch.compile")
    ap.add_argument("--precision", default="default", choices=["default", "highest"],
                    help="float32 matmuls and convolutions: 'default' (TF32 on NVIDIA GPUs, "
                         "in JAX and in PyTorch, whose convolutions default to it and whose "
                         "matmuls are set to it here) or 'highest' (full float32 on both)")
    ap.add_argument("--train-steps", type=int, default=0,
                    help="also time jit_train_steps with this many outer steps per call")
    ap.add_argument("--scaling", default="", choices=["", "steps", "batch", "remat"],
                    help="steps: inner steps 1,5,10,20; batch: meta-batch 1,8,32; remat: "
                         "remat off/on over inner steps")
    ap.add_argument("--scaling-values", default="")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--untimed-per-turn", type=int, default=1,
                    help="untimed steps before each timed one in a runner's turn (the "
                         "round-robin's switch between frameworks; see run_setting)")
    ap.add_argument("--max-seconds", type=float, default=120.0,
                    help="stop repeating a setting after this long (at least 2 repeats)")
    ap.add_argument("--quick", action="store_true",
                    help="CPU smoke: 2 repeats, scaling values cut to the small ones")
    ap.add_argument("--tiny", action="store_true",
                    help="dry run of the script's plumbing: 8 filters, meta-batch 2, 2 inner "
                         "steps (numbers meaningless)")
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)
    if args.quick:
        args.repeats = min(args.repeats, 2)
    args.jax_variants = [v for v in args.jax_variants.split(",") if v] \
        if "jax" in args.frameworks else []
    args.frameworks = args.frameworks.split(",")
    args.torch_threads = [int(t) for t in args.torch_threads.split(",")]
    args.torch_formulations = [f for f in args.torch_formulations.split(",") if f]
    _set_precision(args.precision, "torch" in args.frameworks)

    rows = []
    for name in args.settings.split(","):
        base = jax_setup.SETTINGS[name]
        if args.tiny:
            base = dataclasses.replace(base, filters=8, meta_batch=2, inner_steps=2,
                                       name=base.name + "(tiny)")
        for order in args.orders.split(","):
            s = dataclasses.replace(base, first_order=(order == "first"), msl=not args.no_msl)
            label0 = f"{base.name} {order}-order" + ("" if s.msl else " final-step")
            if not args.scaling:
                rows += run_setting(s, args, label0)
                continue
            if args.scaling == "batch":
                vals = [int(v) for v in
                        (args.scaling_values or ("1,8" if args.quick else "1,8,32")).split(",")]
                for b in vals:
                    rows += run_setting(dataclasses.replace(s, meta_batch=b), args,
                                        f"{label0} batch={b}")
            else:
                vals = [int(v) for v in
                        (args.scaling_values or ("1,5" if args.quick else "1,5,10,20")).split(",")]
                for n in vals:
                    sn = dataclasses.replace(s, inner_steps=n)
                    if args.scaling == "remat":
                        saved = args.jax_variants
                        args.jax_variants = [v.split(":remat")[0] for v in saved] + \
                            [v.split(":remat")[0] + ":remat" for v in saved]
                        rows += run_setting(sn, args, f"{label0} steps={n}")
                        args.jax_variants = saved
                    else:
                        rows += run_setting(sn, args, f"{label0} steps={n}")
    md = markdown(rows)
    print(md)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        meta_info = {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "argv": sys.argv, "jax": jax.__version__, "backend": jax.default_backend(),
            "xla_flags": os.environ.get("XLA_FLAGS", ""), "python": platform.python_version(),
            "precision": args.precision, "untimed_per_turn": args.untimed_per_turn,
        }
        try:
            import torch
            meta_info["torch"] = torch.__version__
        except ImportError:
            pass
        base, _ext = os.path.splitext(args.out)
        with open(base + ".json", "w") as f:
            json.dump({"meta": meta_info, "rows": rows}, f, indent=1)
        with open(base + ".md", "w") as f:
            f.write(f"<!-- {json.dumps(meta_info)} -->\n{md}\n")
    return rows


if __name__ == "__main__":
    main()
