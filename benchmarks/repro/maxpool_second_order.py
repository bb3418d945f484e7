"""Wrong gradients through `jnp.max` (reshape + max pooling) under `jax.jit` on XLA:CPU.

Standalone reproduction (imports only jax, jax.numpy and numpy). Run:

    python maxpool_second_order.py                  # ~70 s on 2 CPU cores
    python maxpool_second_order.py --no-subprocess  # skip the XLA_FLAGS variants
    python maxpool_second_order.py --original       # part 2 in the configuration the bug
                                                    # was found in (4 blocks, 28x28, 5 steps;
                                                    # ~3 min)

Exit status: 1 when the bug reproduces with default flags (the jitted gradient of the
`jnp.max` pool is wrong or NaN in part 1 or in part 2 (a)), 0 otherwise; the last line
printed is a one-line verdict. Rows under non-default XLA_FLAGS are reported in a note.

What goes wrong
---------------
JAX differentiates `reduce_max` with `_reduce_chooser_jvp_rule`
(jax/_src/lax/lax.py): `ind = (operand == max)`, `tangent = sum(t * ind) / sum(ind)`.
That relies on `operand` being bit-identical wherever XLA evaluates it. On XLA:CPU it is
not: the operand (here `x - mean(x)`, from batch norm) is recomputed inside several
loop fusions, and after `algsimp` has rewritten `sum / 20` into `sum * 0.05`, the CPU
backend compiles `x - sum * 0.05` to a fused multiply-add (`vfnmadd`, one rounding) in
some fusions and to `vmulps` + `vsubps` (two roundings) in others. Where `== max` is
evaluated on the FMA copy, no element of a window may equal the max taken from the
other copy, and that window's gradient is silently dropped; where the count
`sum(ind)` is computed from such a copy it is 0 and the gradient is 0/0 = NaN (seen
with --xla_backend_optimization_level=0). `inspect_fma.py` next to this file shows it.

What is needed (found by shrinking the original MAML program; 2-core x86_64 CPU with
AVX-512 and FMA, jax 0.10.2):
  * a reduce_max whose operand XLA recomputes in several fusions, with a multiply-add
    in it: a batch-norm `x - mean(x)` in front of the max (with n = N*H*W not a power
    of two, so the rewritten reciprocal 1/n is inexact), or, in MAML, the inner SGD
    update `p - lr * g` that unrolling fuses into the next step's forward pass;
  * an FMA-capable ISA: `XLA_FLAGS=--xla_cpu_max_isa=AVX` makes every case right;
  * shapes for which the backend contracts in one fusion and not in another: the bug
    comes and goes with the channel count (64 or 128 wrong, 16 or 32 right), batch and
    image size. No MAML, second order, vmap or scan is needed in part 1: a first-order
    `jax.jit(jax.grad(...))` of batch-norm -> 2x2 max-pool on a (5, 2, 2, 128) float32
    input is 39% off (jax 0.10.2);
  * in part 2 (MAML) `lax.scan(unroll>1)` creates the recomputation; with unroll=1 the
    adapted parameters are a loop carry, computed once, and right (except on jax 0.6.2).

Not needed: vmap (part 1 has none), float32 (float64 also fails, in other shapes),
im2col (lax.conv_general_dilated also fails in the MAML net), leaky_relu, long loops.

Variants reported (relative error ||g - g_ref|| / ||g_ref|| per parameter tensor; the
reference is float64 with the where-tournament pool and unroll=1, computed in a
subprocess with JAX_ENABLE_X64=1; conv biases before batch norm are left out: their
exact gradient is 0, so only rounding noise would be compared):
  part 1 (first order): reshape+max under jit, the same op by op without jit, the
    where-tournament pool, lax.reduce_window, and (a) under the XLA_FLAGS of (e)-(g);
  part 2 (MAML, second order; results below are jax 0.10.2's):
    (a) reshape+max pool, unroll=steps       -> wrong
    (b) reshape+max pool, unroll=1           -> right
    (c) where-tournament pool, unroll=steps  -> right
    (d) lax.reduce_window pool, unroll=steps -> right
    (e) (a) with XLA_FLAGS=--xla_disable_hlo_passes=algsimp   -> right
    (f) (a) with XLA_FLAGS=--xla_backend_optimization_level=0 -> NaN
    (g) (a) with XLA_FLAGS=--xla_cpu_max_isa=AVX (no FMA)      -> right
"""
import os
import subprocess
import sys
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

TOL = 1e-3  # float32 results agree with the float64 reference to ~1e-5 when right


# --------------------------------------------------------------------------- pools
def pool_max(x):
    """2x2/2 max-pool as reshape + max: the formulation that goes wrong."""
    n, h, w, c = x.shape
    x = x[:, :h // 2 * 2, :w // 2 * 2]
    return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def pool_where(x):
    """The same pool as a tournament of selections (first maximum wins)."""
    n, h, w, c = x.shape
    x = x[:, :h // 2 * 2, :w // 2 * 2].reshape(n, h // 2, 2, w // 2, 2, c)
    a, b = x[:, :, 0, :, 0], x[:, :, 0, :, 1]
    d, e = x[:, :, 1, :, 0], x[:, :, 1, :, 1]
    top = jnp.where(b > a, b, a)
    bottom = jnp.where(e > d, e, d)
    return jnp.where(bottom > top, bottom, top)


def pool_reduce_window(x):
    _n, h, w, _c = x.shape
    x = x[:, :h // 2 * 2, :w // 2 * 2]
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")


POOLS = {"max": pool_max, "where": pool_where, "reduce_window": pool_reduce_window}


def batch_norm(x, scale=1.0, bias=0.0):
    mean = x.mean(axis=(0, 1, 2))
    var = jnp.square(x - mean).mean(axis=(0, 1, 2))
    return (x - mean) * lax.rsqrt(var + 1e-5) * scale + bias


# ------------------------------------------------------- part 1: first-order core
CORE_SHAPE = (5, 2, 2, 128)  # (N, H, W, C): 5 images, 2x2 pixels, 128 channels


def core_loss(x, w, pool):
    return jnp.sum(POOLS[pool](batch_norm(x)) * w)


def core_data(dtype):
    rng = np.random.default_rng(0)
    n, h, w, c = CORE_SHAPE
    x = rng.standard_normal(CORE_SHAPE)
    wt = rng.standard_normal((n, h // 2, w // 2, c))
    return jnp.asarray(x, dtype), jnp.asarray(wt, dtype)


def core_grad(pool, dtype, use_jit=True):
    x, w = core_data(dtype)
    g = jax.grad(lambda x_: core_loss(x_, w, pool))
    return {"dL/dx": np.asarray(jax.jit(g)(x) if use_jit else g(x), np.float64)}


# ------------------------------------------------ part 2: second-order MAML meta-grad
WAYS, SIZE, FILTERS, TASKS, STEPS, INNER_LR, BLOCKS = 5, 8, 64, 2, 2, 0.4, 1
if os.environ.get("REPRO_ORIGINAL") or "--original" in sys.argv:
    # The configuration the bug was found in: Conv4 on 28x28 (28->14->7->3->1), 5 steps.
    os.environ["REPRO_ORIGINAL"] = "1"  # inherited by the subprocesses
    SIZE, STEPS, BLOCKS = 28, 5, 4


def conv3x3(x, k):
    """'SAME' 3x3 convolution written as im2col + matmul."""
    n, h, w, c = x.shape
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    cols = jnp.concatenate([xp[:, i:i + h, j:j + w] for i in range(3) for j in range(3)], -1)
    return (cols.reshape(n * h * w, 9 * c) @ k.reshape(9 * c, -1)).reshape(n, h, w, -1)


def net(params, x, pool):
    h = x
    for i in range(BLOCKS):
        sfx = "" if i == 0 else str(i)
        h = conv3x3(h, params["conv_w" + sfx]) + params["conv_b" + sfx]
        h = batch_norm(h, params["bn_scale" + sfx], params["bn_bias" + sfx])
        h = jnp.where(h > 0, h, 0.01 * h)  # leaky_relu(0.01)
        h = POOLS[pool](h)
    return h.reshape(h.shape[0], -1) @ params["head_w"] + params["head_b"]


def xent(params, x, y, pool):
    logp = jax.nn.log_softmax(net(params, x, pool))
    return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))


def meta_loss(params, xs, ys, xq, yq, pool, unroll):
    def task(xs, ys, xq, yq):
        def step(p, _):
            g = jax.grad(xent)(p, xs, ys, pool)
            p = jax.tree_util.tree_map(lambda a, b: a - INNER_LR * b, p, g)
            return p, xent(p, xq, yq, pool)
        _, query_losses = lax.scan(step, params, None, length=STEPS, unroll=unroll)
        return query_losses.sum()
    return jax.vmap(task)(xs, ys, xq, yq).mean()


def maml_data(dtype):
    rng = np.random.default_rng(0)
    params, cin, hw = {}, 1, SIZE
    for i in range(BLOCKS):
        sfx = "" if i == 0 else str(i)
        lim = np.sqrt(6 / (9 * cin + 9 * FILTERS))
        params["conv_w" + sfx] = rng.uniform(-lim, lim, (3, 3, cin, FILTERS))
        params["conv_b" + sfx] = np.zeros(FILTERS)
        params["bn_scale" + sfx] = np.ones(FILTERS)
        params["bn_bias" + sfx] = np.zeros(FILTERS)
        cin, hw = FILTERS, hw // 2
    feat = hw * hw * FILTERS
    params["head_w"] = rng.uniform(-1, 1, (feat, WAYS)) * np.sqrt(6 / (feat + WAYS))
    params["head_b"] = np.zeros(WAYS)
    params = {k: jnp.asarray(v, dtype) for k, v in params.items()}
    xs = jnp.asarray(rng.standard_normal((TASKS, WAYS, SIZE, SIZE, 1)), dtype)
    xq = jnp.asarray(rng.standard_normal((TASKS, WAYS, SIZE, SIZE, 1)), dtype)
    y = jnp.tile(jnp.arange(WAYS), (TASKS, 1))
    return params, xs, y, xq, y


def maml_grad(pool, unroll, dtype):
    params, xs, ys, xq, yq = maml_data(dtype)
    f = jax.jit(jax.grad(meta_loss), static_argnums=(5, 6))
    g = f(params, xs, ys, xq, yq, pool, unroll)
    # conv_b feeds batch norm: its exact gradient is 0, so only rounding noise is left.
    return {k: np.asarray(v, np.float64) for k, v in g.items() if not k.startswith("conv_b")}


# --------------------------------------------------------------------- reporting
def rel_errors(g, ref):
    return {k: float(np.linalg.norm(g[k] - ref[k]) / np.linalg.norm(ref[k])) for k in ref}


def lost_windows(g, ref):
    """Pool windows (of the core input) whose gradient differs from the reference."""
    d = np.abs(g["dL/dx"] - ref["dL/dx"])
    n, h, w, c = d.shape
    d = d.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))
    return int((d > TOL * np.abs(ref["dL/dx"]).max()).sum()), d.size


def status(errs):
    vals = np.array(list(errs.values()))
    if np.isnan(vals).any():
        return "NaN"
    return "WRONG" if vals.max() > TOL else "ok"


def fmt(errs):
    return "  ".join(f"{k}={v:.2g}" for k, v in errs.items())


FLAG_VARIANTS = {
    "algsimp_off": "--xla_disable_hlo_passes=algsimp",
    "opt_level_0": "--xla_backend_optimization_level=0",
    "isa_avx": "--xla_cpu_max_isa=AVX",
}


def child(kind, out_path):
    """Runs in a subprocess: 'ref64' (float64 references) or one of FLAG_VARIANTS."""
    res = {}
    if kind == "ref64":
        res["core"] = core_grad("where", jnp.float64)
        res["maml"] = maml_grad("where", 1, jnp.float64)
    else:
        res["core"] = core_grad("max", jnp.float32)
        res["maml"] = maml_grad("max", STEPS, jnp.float32)
    np.savez(out_path, **{f"{part}|{k}": v for part, d in res.items() for k, v in d.items()})


def run_child(kind, tmp):
    out = os.path.join(tmp, f"{kind}.npz")
    env = dict(os.environ, REPRO_CHILD=kind, REPRO_OUT=out)
    if kind == "ref64":
        env["JAX_ENABLE_X64"] = "1"
    else:
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + FLAG_VARIANTS[kind]).strip()
    p = subprocess.run([sys.executable, os.path.abspath(__file__)], env=env,
                       capture_output=True, text=True, check=False)
    if p.returncode != 0:
        raise RuntimeError(f"child {kind} failed:\n{p.stderr[-3000:]}")
    z = np.load(out)
    res = {"core": {}, "maml": {}}
    for key in z.files:
        part, name = key.split("|", 1)
        res[part][name] = z[key]
    return res


def main():
    subprocesses = "--no-subprocess" not in sys.argv
    import jaxlib
    print(f"jax {jax.__version__}  jaxlib {jaxlib.__version__}  backend {jax.default_backend()}"
          f"  devices {jax.devices()}")
    print(f"python {sys.version.split()[0]}  numpy {np.__version__}  "
          f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
    with tempfile.TemporaryDirectory() as tmp:
        ref = run_child("ref64", tmp)  # float64, where-pool, unroll=1
        flagged = {k: run_child(k, tmp) for k in FLAG_VARIANTS} if subprocesses else {}

    rows = []  # (part, label, errs, expect_ok)
    print(f"\nPart 1: first-order jax.jit(jax.grad(sum(maxpool2x2(batch_norm(x)) * w))), "
          f"x float32 {CORE_SHAPE}")
    core_rows = [
        ("reshape+max, jit", core_grad("max", jnp.float32), False),
        ("reshape+max, eager (no jit)", core_grad("max", jnp.float32, use_jit=False), True),
        ("where-tournament, jit", core_grad("where", jnp.float32), True),
        ("reduce_window, jit", core_grad("reduce_window", jnp.float32), True),
    ] + [(f"reshape+max, jit, XLA_FLAGS={flag}", flagged[k]["core"], None)
         for k, flag in FLAG_VARIANTS.items() if k in flagged]
    for label, g, _expect in core_rows:
        errs = rel_errors(g, ref["core"])
        lost, total = lost_windows(g, ref["core"])
        print(f"  {status(errs):5s} {label:60s} {fmt(errs)}  windows wrong: {lost}/{total}")
        rows.append(("core", label, errs))

    print(f"\nPart 2: second-order MAML meta-gradient, {BLOCKS} block(s) (3x3 conv {FILTERS} "
          f"filters im2col -> batch norm -> leaky_relu -> 2x2 max-pool) + dense head, "
          f"{WAYS}-way 1-shot {SIZE}x{SIZE}x1, {TASKS} tasks (vmap), {STEPS} inner SGD "
          f"steps in lax.scan, float32")
    maml_rows = [
        (f"(a) reshape+max, unroll={STEPS}", maml_grad("max", STEPS, jnp.float32)),
        ("(b) reshape+max, unroll=1", maml_grad("max", 1, jnp.float32)),
        (f"(c) where-tournament, unroll={STEPS}", maml_grad("where", STEPS, jnp.float32)),
        (f"(d) reduce_window, unroll={STEPS}", maml_grad("reduce_window", STEPS, jnp.float32)),
    ] + [(f"({'efg'[i]}) (a) + XLA_FLAGS={flag}", flagged[k]["maml"])
         for i, (k, flag) in enumerate(FLAG_VARIANTS.items()) if k in flagged]
    for label, g in maml_rows:
        errs = rel_errors(g, ref["maml"])
        print(f"  {status(errs):5s} {label:60s} {fmt(errs)}")
        rows.append(("maml", label, errs))

    bad = [(part, label) for part, label, errs in rows
           if ("reshape+max, jit" == label or label.startswith("(a)")) and status(errs) != "ok"]
    controls = [(part, label) for part, label, errs in rows if status(errs) != "ok"
                and ("where" in label or "reduce_window" in label or "eager" in label
                     or label.startswith("(b)"))]
    if controls:
        print(f"\nnote: control variants also off: {controls}")
    flag_bad = [(part, label) for part, label, errs in rows
                if "XLA_FLAGS" in label and status(errs) != "ok"]
    if flag_bad:
        print(f"\nnote: wrong or NaN under XLA_FLAGS variants: {flag_bad}")
    if bad:
        print(f"\nVERDICT: BUG REPRODUCES with jax {jax.__version__}/{jax.default_backend()}: "
              + "; ".join(f"{part}: {label}" for part, label in bad))
        return 1
    print(f"\nVERDICT: not reproduced with jax {jax.__version__}/{jax.default_backend()}: "
          "all jnp.max pool gradients agree with the float64 reference")
    return 0


if __name__ == "__main__":
    if os.environ.get("REPRO_CHILD"):
        child(os.environ["REPRO_CHILD"], os.environ["REPRO_OUT"])
    else:
        sys.exit(main())
