"""maml_jax.models: Conv4's parameters and per-step batch norm, StepBatchNorm's running
statistics, the 2x2 max-pool against flax's (value, gradient, ties), and the patch
convolution against ``lax.conv`` (value, gradient, second order, vmap)."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import maml_jax as mj
from maml_jax import models
from tests.support.problems import conv4_problem


def test_conv4_parameter_count_pinned():
    def init_shapes(model, shape):
        return jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros(shape))["params"]

    params = init_shapes(mj.Conv4(num_classes=5, num_steps=5), (1, 28, 28, 1))
    # convs 640 + 3 * 36928, per-step BN 4 * 2 * 5 * 64, head 64 * 5 + 5
    assert sum(x.size for x in jax.tree.leaves(params)) == 114309
    params = init_shapes(mj.Conv4(num_classes=20, num_steps=5, per_step_bn=False),
                         (1, 28, 28, 1))
    assert sum(x.size for x in jax.tree.leaves(params)) == 111424 + 4 * 2 * 64 + 64 * 20 + 20
    params = init_shapes(mj.Conv4(num_classes=5, num_filters=48, num_steps=5), (1, 84, 84, 3))
    assert params["head"]["kernel"].shape == (5 * 5 * 48, 5)


def test_per_step_batch_norm_selects_step():
    model = mj.Conv4(num_classes=3, num_filters=4, num_steps=3)
    variables = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 1)))
    params = variables["params"]
    params["norm0"]["scale"] = params["norm0"]["scale"].at[1].set(2.0)
    x = jax.random.uniform(jax.random.PRNGKey(1), (4, 28, 28, 1))
    # Under jit: op by op, each primitive of the model would compile on its own.
    apply = jax.jit(lambda p, s: model.apply({"params": p}, x, step=s,
                                             mutable=["batch_stats"])[0])
    out = [apply(params, s) for s in range(3)]
    np.testing.assert_allclose(out[0], out[2], rtol=1e-6)
    assert not np.allclose(out[0], out[1])
    # Batch statistics: the output does not depend on running stats unless asked to.
    stats = jax.tree.map(lambda a: a + 5.0, variables["batch_stats"])
    with_ra = jax.jit(lambda v: model.apply(v, x, step=0, use_running_average=True))(
        {"params": params, "batch_stats": stats})
    assert not np.allclose(with_ra, out[0])


def test_running_average_batch_norm_reads_each_steps_statistics():
    bn = mj.StepBatchNorm(num_steps=3)
    x = jax.random.normal(jax.random.PRNGKey(0), (6, 5, 5, 2))
    variables = bn.init(jax.random.PRNGKey(1), x)
    rng = np.random.RandomState(0)
    scale, bias = 1 + rng.rand(3, 2), rng.randn(3, 2)
    mean, var = rng.randn(3, 2), 0.5 + rng.rand(3, 2)
    variables = {"params": {"scale": jnp.asarray(scale, jnp.float32),
                            "bias": jnp.asarray(bias, jnp.float32)},
                 "batch_stats": {"mean": jnp.asarray(mean, jnp.float32),
                                 "var": jnp.asarray(var, jnp.float32)}}
    for step in range(3):
        got = bn.apply(variables, x, step=step, use_running_average=True)
        want = (np.asarray(x) - mean[step]) / np.sqrt(var[step] + 1e-5) * scale[step] + bias[step]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=f"step {step}")
    # Through the loss function of a model (non-transductive evaluation).
    model, variables, meta_params, ((xs, ys), _) = conv4_problem()
    stats = jax.tree.map(lambda a: jnp.asarray(rng.rand(*a.shape) + 0.5, jnp.float32),
                         variables["batch_stats"])
    loss_ra = mj.make_loss_fn(model, use_running_average=True, batch_stats=stats)
    for step in range(3):
        got = loss_ra(meta_params["params"], (xs[0], ys[0]), jnp.int32(step))[0]
        logits = model.apply({"params": meta_params["params"], "batch_stats": stats}, xs[0],
                             step=step, use_running_average=True)
        want = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, ys[0]))
        np.testing.assert_allclose(got, want, rtol=1e-6)
    per_step = [float(loss_ra(meta_params["params"], (xs[0], ys[0]), jnp.int32(t))[0])
                for t in range(3)]
    assert len(set(per_step)) == 3  # each step's statistics change the result


@pytest.mark.parametrize("size", [28, 7, 3])
def test_max_pool_2x2_equals_flax_max_pool(size):
    x = jax.random.normal(jax.random.PRNGKey(size), (2, size, size, 3))  # no exact ties
    ref = lambda v: nn.max_pool(v, (2, 2), strides=(2, 2), padding="VALID")
    np.testing.assert_array_equal(mj.max_pool_2x2(x), ref(x))
    w = jax.random.normal(jax.random.PRNGKey(1), ref(x).shape)
    g = lambda f: jax.grad(lambda v: jnp.sum(jnp.tanh(f(v)) * w))(x)
    np.testing.assert_allclose(g(mj.max_pool_2x2), g(ref), rtol=1e-6, atol=1e-7)


def test_max_pool_2x2_gradient_survives_batch_norm_under_jit():
    """The smallest form of the bug in ``benchmarks/repro``: batch norm -> 2x2 max-pool,
    ``jit(grad)`` on (5, 2, 2, 128). With ``jnp.max`` XLA:CPU dropped the gradient of 76
    windows out of 640 (an FMA in one copy of the recomputed operand, not in the other)."""
    def loss(x, w, pool):
        mean = x.mean(axis=(0, 1, 2))
        y = (x - mean) * jax.lax.rsqrt(jnp.square(x - mean).mean(axis=(0, 1, 2)) + 1e-5)
        return jnp.sum(pool(y) * w)

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((5, 2, 2, 128)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((5, 1, 1, 128)), jnp.float32)
    flax_pool = lambda v: nn.max_pool(v, (2, 2), strides=(2, 2), padding="VALID")
    with jax.enable_x64(True):
        ref = jax.grad(loss)(x.astype(jnp.float64), w.astype(jnp.float64), flax_pool)
    got = jax.jit(jax.grad(loss), static_argnums=2)(x, w, mj.max_pool_2x2)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


def test_max_pool_2x2_ties_route_the_gradient_to_the_first_maximum():
    """As PyTorch's max_pool2d: at an exact tie the first element (row-major) gets it all."""
    x = jnp.array([[1.0, 3.0], [3.0, 2.0]]).reshape(1, 2, 2, 1)
    g = jax.grad(lambda v: jnp.sum(mj.max_pool_2x2(v)))(x)
    np.testing.assert_array_equal(g[0, :, :, 0], [[0.0, 1.0], [0.0, 0.0]])
    x = jnp.full((1, 2, 2, 1), 7.0)
    g = jax.grad(lambda v: jnp.sum(mj.max_pool_2x2(v)))(x)
    np.testing.assert_array_equal(g[0, :, :, 0], [[1.0, 0.0], [0.0, 0.0]])
    # Odd sizes are cropped like F.max_pool2d (VALID): 3x3 -> 1x1 from the top-left 2x2.
    x = jnp.arange(9.0).reshape(1, 3, 3, 1)
    assert mj.max_pool_2x2(x).shape == (1, 1, 1, 1) and float(mj.max_pool_2x2(x)[0, 0, 0, 0]) == 4


def _lax_conv(x, k):
    return jax.lax.conv_general_dilated(x, k, (1, 1), ((1, 1), (1, 1)),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


@pytest.mark.parametrize("shape", [(2, 7, 7, 1, 4), (3, 6, 5, 3, 8)])
def test_conv3x3_patches_matches_lax_conv(shape):
    n, h, w, cin, cout = shape
    kx, kk, kc = jax.random.split(jax.random.PRNGKey(0), 3)
    x = jax.random.normal(kx, (n, h, w, cin))
    k = jax.random.normal(kk, (3, 3, cin, cout))
    ct = jax.random.normal(kc, (n, h, w, cout))
    np.testing.assert_allclose(models.conv3x3_patches(x, k), _lax_conv(x, k),
                               rtol=1e-5, atol=1e-5)

    def loss(conv):
        return lambda x, k: jnp.sum(jnp.tanh(conv(x, k)) * ct)

    # Under jit: op by op, each primitive of these derivatives would compile on its own.
    g_p = jax.jit(jax.grad(loss(models.conv3x3_patches), argnums=(0, 1)))(x, k)
    g_x = jax.jit(jax.grad(loss(_lax_conv), argnums=(0, 1)))(x, k)
    for a, b in zip(g_p, g_x, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)

    # Second order (what MAML differentiates): Hessian-vector products agree.
    vx, vk = jax.random.normal(kx, x.shape), jax.random.normal(kk, k.shape)

    @functools.partial(jax.jit, static_argnums=0)
    def hvp(conv):
        g = jax.grad(loss(conv), argnums=(0, 1))
        return jax.jvp(g, (x, k), (vx, vk))[1]

    for a, b in zip(hvp(models.conv3x3_patches), hvp(_lax_conv), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3)

    # Under vmap over per-task kernels as well.
    xs, ks = jnp.stack([x, 2 * x]), jnp.stack([k, -k])
    np.testing.assert_allclose(jax.vmap(models.conv3x3_patches)(xs, ks),
                               jax.vmap(_lax_conv)(xs, ks), rtol=1e-5, atol=1e-4)


def test_conv4_impls_agree_and_auto_resolves():
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 28, 28, 1))
    outs = {}
    for impl in ("xla", "patches", "auto"):
        m = models.Conv4(num_classes=3, num_filters=8, num_steps=2, conv_impl=impl)
        v = jax.jit(m.init)(jax.random.PRNGKey(0), x)
        outs[impl] = jax.jit(lambda v, m=m: m.apply(v, x, step=1, mutable=["batch_stats"])[0])(v)
    np.testing.assert_allclose(outs["patches"], outs["xla"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(outs["auto"], outs["xla"], rtol=1e-4, atol=1e-4)
    expected = "patches" if jax.default_backend() in ("cpu", "gpu") else "xla"
    assert models.resolve_conv_impl("auto") == expected
    assert models.Conv4(num_classes=3).conv_impl == "auto"
    with pytest.raises(ValueError):
        models.Conv4(num_classes=3, conv_impl="nope").init(jax.random.PRNGKey(0), x)
