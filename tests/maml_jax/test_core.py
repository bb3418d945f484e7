"""maml_jax.core, the per-task maths: closed forms, numerical gradients, scan vs loop, first
order; the loss contract; inner learning rates (Meta-SGD's shared per-weight rates) and the
inner-gradient clip, against closed forms and Python loops."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import maml_jax as mj
from maml_jax import core
from tests.support.problems import tanh_mlp_loss, tanh_mlp_problem

# -- closed form on a quadratic loss ------------------------------------------------------

def _quad_loss(params, batch, step):
    a, b = batch
    r = a @ params["w"] - b
    return 0.5 * jnp.sum(r * r)


def _quad_problem(seed=0, d=3, n=4):
    rng = np.random.RandomState(seed)
    a_s, a_q = rng.randn(n, d), rng.randn(n, d)
    b_s, b_q = rng.randn(n), rng.randn(n)
    w = rng.randn(d)
    return w, (a_s, b_s), (a_q, b_q)


def _closed_form(w, alpha, support, query, second_order):
    a_s, b_s = support
    a_q, b_q = query
    g_s = a_s.T @ (a_s @ w - b_s)
    w1 = w - alpha * g_s
    g_q = a_q.T @ (a_q @ w1 - b_q)
    jac = np.eye(len(w)) - alpha * a_s.T @ a_s if second_order else np.eye(len(w))
    d_w = jac.T @ g_q
    d_alpha = -g_s @ g_q  # the inner rate gets this gradient in both orders
    loss = 0.5 * np.sum((a_q @ w1 - b_q) ** 2)
    return loss, d_w, d_alpha


@pytest.mark.parametrize("first_order", [False, True])
def test_one_step_meta_gradient_equals_closed_form(first_order):
    with jax.enable_x64(True):
        w, support, query = _quad_problem()
        alpha = 0.05

        def meta(w_, a_):
            loss, _ = mj.task_loss(_quad_loss, {"w": w_}, {"w": a_}, support, query,
                                   num_steps=1, step_weights=jnp.ones(1),
                                   first_order=first_order)
            return loss

        loss, (d_w, d_a) = jax.value_and_grad(meta, argnums=(0, 1))(jnp.asarray(w),
                                                                      jnp.asarray(alpha))
        ref_loss, ref_dw, ref_da = _closed_form(w, alpha, support, query, not first_order)
        np.testing.assert_allclose(loss, ref_loss, rtol=1e-12)
        np.testing.assert_allclose(d_w, ref_dw, rtol=1e-10)
        np.testing.assert_allclose(d_a, ref_da, rtol=1e-10)


def test_second_order_differs_from_first_order():
    with jax.enable_x64(True):
        w, support, query = _quad_problem(seed=1)

        def grad(fo):
            f = lambda w_: mj.task_loss(_quad_loss, {"w": w_}, {"w": 0.1}, support, query,
                                        num_steps=1, step_weights=jnp.ones(1),
                                        first_order=fo)[0]
            return jax.grad(f)(jnp.asarray(w))

        g2, g1 = grad(False), grad(True)
        assert np.max(np.abs(g2 - g1)) > 1e-3
        # ... by exactly the Hessian term of the closed form.
        _, ref2, _ = _closed_form(w, 0.1, support, query, True)
        _, ref1, _ = _closed_form(w, 0.1, support, query, False)
        np.testing.assert_allclose(g2 - g1, ref2 - ref1, rtol=1e-9)


# -- small MLP helpers --------------------------------------------------------------------

def _mlp_setup(dtype=jnp.float32, seed=0, granularity="layer_step", num_steps=3):
    model = mj.MLP(hidden=(8, 8))
    params = model.init(jax.random.PRNGKey(seed), jnp.zeros((1, 1)))["params"]
    params = jax.tree.map(lambda p: p.astype(dtype), params)
    lrs = mj.init_inner_lrs(params, num_steps, 0.02, granularity)
    lrs = jax.tree.map(lambda a: a.astype(dtype), lrs)
    (xs, ys), (xq, yq) = mj.sample_sinusoid_tasks(jax.random.PRNGKey(seed + 1), 1, 5, 7)
    support = (xs[0].astype(dtype), ys[0].astype(dtype))
    query = (xq[0].astype(dtype), yq[0].astype(dtype))
    loss_fn = mj.make_loss_fn(model, "mse", has_aux=False)
    return loss_fn, params, lrs, support, query


def _tanh_loss(params, batch, step):
    # A smooth model: finite differences need no ReLU kinks nearby.
    x, y = batch
    h = jnp.tanh(x @ params["w1"] + params["b1"])
    return jnp.mean((h @ params["w2"] + params["b2"] - y) ** 2)


@pytest.mark.parametrize("granularity", ["layer_step", "parameter"])
def test_check_grads_second_order_task_loss_float64(granularity):
    with jax.enable_x64(True):
        rng = np.random.RandomState(0)
        params = {"w1": rng.randn(1, 8), "b1": rng.randn(8), "w2": rng.randn(8, 1) / 3,
                  "b2": np.zeros(1)}
        params = jax.tree.map(jnp.asarray, params)
        lrs = jax.tree.map(lambda a: a.astype(jnp.float64),
                           mj.init_inner_lrs(params, 2, 0.05, granularity))
        support = (jnp.asarray(rng.randn(5, 1)), jnp.asarray(rng.randn(5, 1)))
        query = (jnp.asarray(rng.randn(7, 1)), jnp.asarray(rng.randn(7, 1)))
        weights = jnp.array([0.3, 0.7])

        def f(p, a):
            return mj.task_loss(_tanh_loss, p, a, support, query, num_steps=2,
                                step_weights=weights)[0]

        check_grads(f, (params, lrs), order=1, modes=["rev"], atol=1e-6, rtol=1e-6)
        # First order is an approximation: it must NOT pass the same numerical check.
        fo = lambda p, a: mj.task_loss(_tanh_loss, p, a, support, query, num_steps=2,
                                       step_weights=weights, first_order=True)[0]
        with pytest.raises(AssertionError):
            check_grads(fo, (params, lrs), order=1, modes=["rev"], atol=1e-6, rtol=1e-6)


def _python_loop_adapt(loss_fn, params, lrs, support, num_steps):
    for t in range(num_steps):
        g = jax.grad(loss_fn)(params, support, t)
        params = jax.tree.map(lambda p, lr, gg: p - lr[t] * gg, params, lrs, g)
    return params


@pytest.mark.parametrize("granularity", ["layer_step", "parameter"])
def test_scan_adapt_equals_python_loop(granularity):
    with jax.enable_x64(True):
        loss_fn, params, lrs, support, query = _mlp_setup(jnp.float64, granularity=granularity)
        lrs = jax.tree.map(lambda a: a * (1 + 0.1 * jnp.arange(a.shape[0]).reshape(
            (-1,) + (1,) * (a.ndim - 1))), lrs)  # different rates per step
        # Under jit: op by op, each primitive of the loop would compile on its own.
        scan = jax.jit(lambda p, a: mj.adapt(loss_fn, p, a, support, num_steps=3))
        loop = jax.jit(lambda p, a: _python_loop_adapt(loss_fn, p, a, support, 3))
        chex.assert_trees_all_close(scan(params, lrs), loop(params, lrs), rtol=1e-12)

        def outer(adapt_fn):
            return lambda p, a: loss_fn(adapt_fn(p, a), query, 2)

        g_scan = jax.jit(jax.grad(outer(scan), argnums=(0, 1)))(params, lrs)
        g_loop = jax.jit(jax.grad(outer(loop), argnums=(0, 1)))(params, lrs)
        chex.assert_trees_all_close(g_scan, g_loop, rtol=1e-9, atol=1e-12)


def test_task_loss_per_step_losses_match_loop():
    with jax.enable_x64(True):
        loss_fn, params, lrs, support, query = _mlp_setup(jnp.float64)
        w = jnp.array([0.2, 0.3, 0.5])
        loss, per_step = mj.task_loss(loss_fn, params, lrs, support, query, num_steps=3,
                                      step_weights=w)
        expected = [loss_fn(_python_loop_adapt(loss_fn, params, lrs, support, t + 1), query, t)
                    for t in range(3)]
        np.testing.assert_allclose(per_step, expected, rtol=1e-12)
        np.testing.assert_allclose(loss, np.dot(w, expected), rtol=1e-12)


def test_first_order_equals_explicit_stop_gradient():
    with jax.enable_x64(True):
        loss_fn, params, lrs, support, query = _mlp_setup(jnp.float64)

        def explicit(p, a):
            # FOMAML written out by hand: the inner gradient is a constant.
            fast = p
            for t in range(3):
                g = jax.lax.stop_gradient(jax.grad(loss_fn)(fast, support, t))
                fast = jax.tree.map(lambda q, lr, gg: q - lr[t] * gg, fast, a, g)
            return loss_fn(fast, query, 2)

        def ours(p, a):
            return mj.task_loss(loss_fn, p, a, support, query, num_steps=3,
                                step_weights=mj.final_step_weights(3), first_order=True)[0]

        g_ours = jax.grad(ours, argnums=(0, 1))(params, lrs)
        g_ref = jax.grad(explicit, argnums=(0, 1))(params, lrs)
        chex.assert_trees_all_close(g_ours, g_ref, rtol=1e-10, atol=1e-14)
        # And the rates do get a (non-zero) meta-gradient in first order.
        assert all(np.any(np.asarray(x) != 0) for x in jax.tree.leaves(g_ours[1]))


def test_remat_does_not_change_values_or_gradients():
    loss_fn, params, lrs, support, query = _mlp_setup()

    def f(remat):
        return lambda p: mj.task_loss(loss_fn, p, lrs, support, query, num_steps=3,
                                      step_weights=mj.msl_weights(0, 3, 10), remat=remat)[0]

    v1, g1 = jax.value_and_grad(f(False))(params)
    v2, g2 = jax.value_and_grad(f(True))(params)
    np.testing.assert_allclose(v1, v2, rtol=1e-6)
    chex.assert_trees_all_close(g1, g2, rtol=1e-5, atol=1e-7)


# -- MSL weights --------------------------------------------------------------------------

@pytest.mark.parametrize("epoch,expected", [
    (0, [0.2] * 5),
    (1, [0.18] * 4 + [0.28]),
    (5, [0.1] * 4 + [0.6]),
    (9, [0.02] * 4 + [0.92]),
    (10, [0, 0, 0, 0, 1]),
    (50, [0, 0, 0, 0, 1]),
])
def test_msl_weights_reference_values(epoch, expected):
    np.testing.assert_allclose(mj.msl_weights(epoch, 5, 10), expected, atol=1e-6)


def test_msl_weights_floor_and_sum():
    # Late in a long annealing the floor 0.03/N and the cap 1-(N-1)*0.03/N bind.
    w = np.asarray(mj.msl_weights(99, 5, 100))
    np.testing.assert_allclose(w[:-1], 0.03 / 5, atol=1e-7)
    np.testing.assert_allclose(w[-1], 1 - 4 * 0.03 / 5, atol=1e-6)
    for e in range(12):
        np.testing.assert_allclose(np.sum(mj.msl_weights(e, 5, 10)), 1.0, atol=1e-5)


# -- inner learning rates -----------------------------------------------------------------

def test_init_inner_lrs_shapes_and_mask():
    params = {"a": jnp.zeros((3, 2)), "b": jnp.zeros((2,))}
    assert mj.init_inner_lrs(params, 4, 0.1, "scalar")["a"].shape == ()
    assert mj.init_inner_lrs(params, 4, 0.1, "layer_step")["a"].shape == (4,)
    assert mj.init_inner_lrs(params, 4, 0.1, "parameter")["a"].shape == (4, 3, 2)
    lrs = mj.init_inner_lrs(params, 4, 0.1, "layer_step", mask={"a": True, "b": False})
    assert lrs["b"] is None
    np.testing.assert_allclose(lrs["a"], 0.1)


def test_masked_parameters_are_not_adapted():
    params = {"a": jnp.ones(2), "b": jnp.ones(2)}
    lrs = mj.init_inner_lrs(params, 2, 0.5, "layer_step", mask={"a": True, "b": False})
    loss = lambda p, b, t: jnp.sum(p["a"] ** 2) + jnp.sum(p["b"] ** 2)
    out = mj.adapt(loss, params, lrs, None, num_steps=2)
    np.testing.assert_allclose(out["b"], 1.0)
    np.testing.assert_allclose(out["a"], 0.0)  # 1 - 0.5*2*1 = 0, then stays 0


def test_extend_inner_lrs():
    lrs = {"w": jnp.array([0.1, 0.2]), "s": jnp.array(0.3), "n": None}
    ext = mj.extend_inner_lrs(lrs, 4)
    np.testing.assert_allclose(ext["w"], [0.1, 0.2, 0.2, 0.2])
    assert ext["s"].shape == () and ext["n"] is None
    np.testing.assert_allclose(mj.extend_inner_lrs(lrs, 1)["w"], [0.1])


def test_meta_sgd_rates_are_one_per_weight_shared_by_every_step():
    params, rates, support, _ = tanh_mlp_problem()
    lrs = core.init_inner_lrs(params, 4, 0.1, "meta_sgd")
    assert jax.tree.map(jnp.shape, lrs) == {"w1": (1, 3, 4), "b1": (1, 4), "w2": (1, 4, 1)}
    shared = core.adapt(tanh_mlp_loss, params, rates, support, num_steps=3)
    repeated = core.adapt(tanh_mlp_loss, params, jax.tree.map(lambda r: jnp.repeat(r, 3, 0), rates),
                          support, num_steps=3)
    for a, b in zip(jax.tree.leaves(shared), jax.tree.leaves(repeated), strict=True):
        np.testing.assert_array_equal(a, b)
    extended = core.extend_inner_lrs(rates, 5)
    assert extended["w1"].shape == (5, 3, 4)


def test_clip_inner_grads_closed_form():
    g = {"a": jnp.array([3.0, 0.0]), "b": jnp.array(4.0), "frozen": jnp.array([100.0])}
    lrs = {"a": 0.1, "b": 0.1, "frozen": None}   # the frozen leaf's gradient is not counted
    clipped = core.clip_inner_grads(g, lrs, 1.0)
    np.testing.assert_allclose(clipped["a"], [0.6, 0.0], rtol=1e-6)
    np.testing.assert_allclose(clipped["b"], 0.8, rtol=1e-6)
    unchanged = core.clip_inner_grads(g, lrs, 5.0)   # norm 5 is not above the bound
    for k in g:
        np.testing.assert_allclose(unchanged[k], g[k], rtol=1e-6)
    assert core.clip_inner_grads(g, lrs, None) is g
    # An all-zero inner gradient: zero step, and a finite meta-gradient through the norm.
    meta_grad = jax.grad(lambda w: jnp.sum(core.clip_inner_grads(
        {"w": w * 0.0}, {"w": 0.1}, 1.0)["w"]))(jnp.ones(3))
    assert bool(jnp.all(jnp.isfinite(meta_grad)))


def test_clipped_inner_loop_stays_bounded_where_the_plain_one_overflows():
    """A loss too curved for its rate (curvature 1000, rate 0.01: each plain step multiplies
    the weight by -9) overflows float32 in 50 steps; clipped to norm c, K steps move the
    weight by at most K * rate * c."""
    loss = lambda p, b, s: 500.0 * jnp.sum(p["w"] ** 2)
    p0 = {"w": jnp.array([1.0])}
    plain = core.adapt(loss, p0, {"w": 0.01}, None, num_steps=50)
    assert not bool(jnp.all(jnp.isfinite(plain["w"])))
    clipped = core.adapt(loss, p0, {"w": 0.01}, None, num_steps=50, grad_clip=100.0)
    assert float(jnp.max(jnp.abs(clipped["w"] - p0["w"]))) <= 50 * 0.01 * 100.0 + 1e-4


# -- the loss contract (no compiles) ------------------------------------------------------

def _quad(p, b, t):
    return jnp.sum((p["w"] - b) ** 2)


def test_every_entry_point_accepts_scalar_and_pair_losses():
    params, lrs, batch = {"w": jnp.ones(2)}, {"w": jnp.float32(0.1)}, jnp.zeros(2)
    pair = lambda p, b, t: (_quad(p, b, t), {"extra": jnp.float32(1.0)})
    chex.assert_trees_all_close(mj.adapt(pair, params, lrs, batch, num_steps=1),
                                mj.adapt(_quad, params, lrs, batch, num_steps=1))
    loss, (per_step, aux) = mj.task_loss(_quad, params, lrs, batch, batch, num_steps=1,
                                         step_weights=jnp.ones(1), has_aux=True)
    assert aux == {}
    loss2, per_step2 = mj.task_loss(pair, params, lrs, batch, batch, num_steps=1,
                                    step_weights=jnp.ones(1))
    chex.assert_trees_all_close((loss, per_step), (loss2, per_step2))


def test_bad_loss_outputs_raise_type_errors():
    params, lrs, batch = {"w": jnp.ones(2)}, {"w": 0.1}, jnp.zeros(2)
    with pytest.raises(TypeError, match=r"scalar loss, got an array of shape \(2,\)"):
        mj.adapt(lambda p, b, t: (p["w"] - b) ** 2, params, lrs, batch, num_steps=1)
    with pytest.raises(TypeError, match="a tuple of 3 items"):
        mj.adapt(lambda p, b, t: (_quad(p, b, t), {}, 1), params, lrs, batch, num_steps=1)


# -- bad input ----------------------------------------------------------------------------

def test_bad_num_steps_and_granularity():
    params = {"w": jnp.zeros(2)}
    with pytest.raises(ValueError, match="num_steps must be >= 1"):
        mj.init_inner_lrs(params, 0, 0.1)
    with pytest.raises(ValueError, match="unknown granularity 'per_layer'"):
        mj.init_inner_lrs(params, 2, 0.1, "per_layer")
    loss = lambda p, b, t: jnp.sum(p["w"] ** 2)
    with pytest.raises(ValueError, match="num_steps must be >= 1"):
        mj.adapt(loss, params, {"w": 0.1}, None, num_steps=0)
    with pytest.raises(ValueError, match="has 3 steps but num_steps=2"):
        mj.adapt(loss, params, {"w": jnp.ones(3)}, None, num_steps=2)
    with pytest.raises(ValueError, match="does not match its parameter"):
        mj.adapt(loss, params, {"w": jnp.ones((2, 5))}, None, num_steps=2)
    with pytest.raises(ValueError, match=r"params has 'w' which inner_lrs lacks.*must mirror"):
        mj.adapt(loss, params, {"v": 0.1}, None, num_steps=1)
    with pytest.raises(ValueError, match=r"step_weights must have shape \(2,\)"):
        mj.task_loss(loss, params, {"w": 0.1}, None, None, num_steps=2,
                     step_weights=jnp.ones(3))


def test_wrong_mask_structure_names_the_path():
    params = {"a": {"kernel": jnp.zeros(2), "bias": jnp.zeros(2)}, "b": jnp.zeros(1)}
    with pytest.raises(ValueError, match="params has 'a/kernel' which mask lacks"):
        mj.init_inner_lrs(params, 1, 0.1, mask={"a": {"bias": True}, "b": True})


@pytest.mark.parametrize("call, message", [
    (lambda: core.init_inner_lrs({"w": jnp.ones(2)}, 2, 0.1, "per_weight"),
     "unknown granularity 'per_weight'"),
    (lambda: core.init_inner_lrs({"w": jnp.ones(2)}, 2, -0.1),
     r"init_lr \(the initial inner learning rate\) must be a finite number > 0, got -0.1"),
    (lambda: core.init_inner_lrs({"w": jnp.ones(2)}, 2, 0.0), "must be a finite number > 0"),
    (lambda: core.init_inner_lrs({"w": jnp.ones(2)}, 2, float("inf")), "got inf"),
])
def test_bad_requests_name_the_value(call, message):
    with pytest.raises(ValueError, match=message):
        call()
