"""iMAML against closed forms: on linear-regression tasks the proximal inner problem has an
exact minimiser, and the implicit meta-gradient (CG converged) equals the exact gradient of
the query loss at it, and float64 finite differences of that function."""

import functools

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

import maml_jax as mj
from maml_jax.algorithms import IMAML
from maml_jax.algorithms.imaml import conjugate_gradient

DIM = 4
LAM = 1.5
STEPS = 600      # enough inner steps that gradient descent reaches the minimiser (float64)


def _linear_loss(params, batch, step):
    x, y = batch
    return jnp.mean((x @ params["w"] + params["b"] - y) ** 2)


def _tasks(seed=0, num_tasks=3, shots=6):
    rng = np.random.RandomState(seed)
    xs, xq = rng.randn(2, num_tasks, shots, DIM)
    true_w = rng.randn(num_tasks, DIM)
    ys = np.einsum("tnd,td->tn", xs, true_w) + 0.1 * rng.randn(num_tasks, shots)
    yq = np.einsum("tnd,td->tn", xq, true_w)
    return (jnp.asarray(xs), jnp.asarray(ys)), (jnp.asarray(xq), jnp.asarray(yq))


def _theta():
    rng = np.random.RandomState(7)
    return {"w": jnp.asarray(rng.randn(DIM)), "b": jnp.asarray(0.3)}


def _design(x):
    return np.concatenate([np.asarray(x), np.ones((len(x), 1))], axis=1)


def _minimiser(theta_wb, x, y, adapt_bias=True):
    """argmin_phi mean((A phi - y)^2) + lam/2 ||phi - theta||^2 over the adapted entries."""
    a, n = _design(x), len(y)
    if adapt_bias:
        h = 2.0 / n * a.T @ a
        return np.linalg.solve(h + LAM * np.eye(DIM + 1), LAM * theta_wb + 2.0 / n * a.T @ y)
    w, b = theta_wb[:DIM], theta_wb[DIM]
    xx = np.asarray(x)
    h = 2.0 / n * xx.T @ xx
    w_star = np.linalg.solve(h + LAM * np.eye(DIM), LAM * w + 2.0 / n * xx.T @ (y - b))
    return np.concatenate([w_star, [b]])


def _meta_loss(theta_wb, tasks, adapt_bias=True):
    (xs, ys), (xq, yq) = tasks
    losses = []
    for t in range(xs.shape[0]):
        phi = _minimiser(theta_wb, xs[t], np.asarray(ys[t]), adapt_bias)
        losses.append(np.mean((_design(xq[t]) @ phi - np.asarray(yq[t])) ** 2))
    return np.mean(losses)


def _exact_gradient(theta_wb, tasks):
    """lam (H + lam I)^{-1} grad L_query(phi*), averaged over tasks."""
    (xs, ys), (xq, yq) = tasks
    grads = []
    for t in range(xs.shape[0]):
        a, n = _design(xs[t]), xs.shape[1]
        phi = _minimiser(theta_wb, xs[t], np.asarray(ys[t]))
        aq = _design(xq[t])
        g = 2.0 / len(aq) * aq.T @ (aq @ phi - np.asarray(yq[t]))
        grads.append(LAM * np.linalg.solve(2.0 / n * a.T @ a + LAM * np.eye(DIM + 1), g))
    return np.mean(grads, axis=0)


def _fd(f, x, eps=1e-6):
    out = np.zeros_like(x)
    for i in range(len(x)):
        e = np.zeros_like(x)
        e[i] = eps
        out[i] = (f(x + e) - f(x - e)) / (2 * eps)
    return out


def _imaml_gradient(tasks, adapt_bias=True, cg_iterations=DIM + 1, jit=True):
    theta = _theta()
    mask = {"w": True, "b": adapt_bias}
    rates = mj.init_inner_lrs(theta, STEPS, 0.05, "scalar", mask=mask)
    cfg = mj.MetaConfig(num_inner_steps=STEPS, unroll=1,
                        algorithm=IMAML(lam=LAM, cg_iterations=cg_iterations))
    fn = functools.partial(mj.meta_gradient, loss_fn=_linear_loss, config=cfg, phase=None)
    fn = jax.jit(fn) if jit else fn
    loss, grads, _ = fn({"params": theta, "inner_lrs": rates}, tasks, step=0)
    g = np.concatenate([np.asarray(grads["params"]["w"]), [float(grads["params"]["b"])]])
    theta_wb = np.concatenate([np.asarray(theta["w"]), [float(theta["b"])]])
    return loss, g, theta_wb, grads


def test_implicit_gradient_equals_the_exact_gradient_and_finite_differences():
    with jax.enable_x64(True):
        tasks = _tasks()
        loss, g, theta_wb, grads = _imaml_gradient(tasks)
        np.testing.assert_allclose(g, _exact_gradient(theta_wb, tasks), rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(g, _fd(lambda t: _meta_loss(t, tasks), theta_wb),
                                   rtol=1e-6, atol=1e-8)
        assert float(loss) == pytest.approx(_meta_loss(theta_wb, tasks), rel=1e-10)
        assert float(grads["inner_lrs"]["w"]) == 0.0


def test_parameters_fixed_in_the_inner_loop_get_their_exact_gradient():
    """The bias held at theta in the inner loop still moves the minimiser of the weights:
    its gradient carries the mixed term, checked against finite differences."""
    with jax.enable_x64(True):
        tasks = _tasks(seed=2)
        _, g, theta_wb, _ = _imaml_gradient(tasks, adapt_bias=False, cg_iterations=DIM)
        want = _fd(lambda t: _meta_loss(t, tasks, adapt_bias=False), theta_wb)
        np.testing.assert_allclose(g, want, rtol=1e-6, atol=1e-8)
        # without the mixed term the bias's gradient is the direct one, and differs
        (xs, ys), (xq, yq) = tasks
        direct = np.mean([2.0 * np.mean(_design(xq[t]) @ _minimiser(
            theta_wb, xs[t], np.asarray(ys[t]), False) - np.asarray(yq[t]))
            for t in range(xs.shape[0])])
        assert abs(direct - want[DIM]) > 1e-3


def test_too_few_cg_iterations_are_an_approximation_and_jit_equals_no_jit():
    with jax.enable_x64(True):
        tasks = _tasks(seed=4)
        _, g1, theta_wb, _ = _imaml_gradient(tasks, cg_iterations=1)
        exact = _exact_gradient(theta_wb, tasks)
        assert np.max(np.abs(g1 - exact)) > 1e-4
        _, g_eager, _, _ = _imaml_gradient(tasks, cg_iterations=1, jit=False)
        np.testing.assert_allclose(g_eager, g1, rtol=1e-12, atol=1e-14)


def test_conjugate_gradient_solves_a_positive_definite_system():
    with jax.enable_x64(True):
        rng = np.random.RandomState(0)
        m = rng.randn(6, 6)
        a = m @ m.T + 0.5 * np.eye(6)
        b = {"u": jnp.asarray(rng.randn(4)), "v": jnp.asarray(rng.randn(2))}

        def matvec(v):
            flat = jnp.asarray(a) @ jnp.concatenate([v["u"], v["v"]])
            return {"u": flat[:4], "v": flat[4:]}

        x = conjugate_gradient(matvec, b, 6)
        want = np.linalg.solve(a, np.concatenate([b["u"], b["v"]]))
        np.testing.assert_allclose(np.concatenate([x["u"], x["v"]]), want, rtol=1e-8)
        zero = conjugate_gradient(matvec, jax.tree.map(jnp.zeros_like, b), 3)
        assert all(np.all(np.asarray(z) == 0) for z in jax.tree.leaves(zero))


def test_imaml_trains_a_conv4_through_the_facade():
    ways, steps = 3, 2
    model = mj.Conv4(num_classes=ways, num_filters=4, num_blocks=2, num_steps=steps)
    rng = np.random.RandomState(0)
    x = jnp.asarray(rng.rand(2, ways, 12, 12, 1).astype(np.float32))
    y = jnp.tile(jnp.arange(ways), (2, 1))
    maml = mj.ModelAgnosticMetaLearning(model, inner_lr=0.1, inner_steps=steps,
                                        algorithm=IMAML(lam=0.5, cg_iterations=3))
    losses = [maml.meta_train_step(x, y, x + 0.1, y) for _ in range(2)]
    assert np.all(np.isfinite(losses)) and maml.step == 2


def test_imaml_settings_are_checked():
    for bad, match in ((dict(lam=0.0), "lam"), (dict(cg_iterations=0), "cg_iterations"),
                       (dict(cg_damping=-1.0), "cg_damping")):
        with pytest.raises(ValueError, match=match):
            IMAML(**bad)


def test_evaluation_adapts_with_the_proximal_objective():
    """evaluate_tasks(algorithm=IMAML) takes the proximal inner steps meta-training took;
    without it, plain SGD steps (a different adapted model)."""
    with jax.enable_x64(True):
        tasks = _tasks(seed=5)
        theta = _theta()
        rates = mj.init_inner_lrs(theta, 3, 0.05, "scalar")
        algorithm = IMAML(lam=LAM)
        losses, _ = mj.evaluate_tasks(_linear_loss, theta, rates, tasks, num_steps=3,
                                      algorithm=algorithm)
        plain, _ = mj.evaluate_tasks(_linear_loss, theta, rates, tasks, num_steps=3)
        (xs, ys), (xq, yq) = tasks
        for t in range(xs.shape[0]):
            adapted = mj.adapt(algorithm.support_objective(_linear_loss, theta), theta, rates,
                               (xs[t], ys[t]), num_steps=3)
            want = float(_linear_loss(adapted, (xq[t], yq[t]), 2))
            assert float(losses[t, -1]) == pytest.approx(want, rel=1e-12)
        assert np.max(np.abs(np.asarray(losses[:, -1] - plain[:, -1]))) > 1e-6
        np.testing.assert_array_equal(losses[:, 0], plain[:, 0])   # before adaptation


def test_conjugate_gradient_stops_at_non_positive_curvature():
    """An indefinite system (I + H / lam with an eigenvalue of H below -lam): CG returns the
    first iterate, along the gradient, and never steps along the negative direction."""
    with jax.enable_x64(True):
        a = jnp.diag(jnp.array([2.0, -1.0]))
        b = jnp.array([1.0, 1.0])
        # p0 = b: p^T A p = 1 > 0, x1 = (b.b / b.A.b) b = 2 b; then the residual
        # (1 - 4, 1 + 2) = (-3, 3) gives p1 with p1^T A p1 < 0: stop at x1.
        x = conjugate_gradient(lambda v: a @ v, b, 5)
        np.testing.assert_allclose(x, [2.0, 2.0])
        # positive definite, the same calls solve exactly
        spd = jnp.diag(jnp.array([2.0, 0.5]))
        np.testing.assert_allclose(conjugate_gradient(lambda v: spd @ v, b, 2), [0.5, 2.0])


def test_implicit_gradient_of_a_non_convex_model_matches_finite_differences():
    """A tanh MLP (non-quadratic loss, Hessian varying with phi): with the proximal problem
    solved (800 inner steps, strongly convex at lam = 5) and CG run to convergence, the
    implicit gradient equals central differences of theta -> L_query(phi*(theta))."""
    with jax.enable_x64(True):
        model = mj.MLP(hidden=(3,))
        init = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 1), jnp.float64))["params"]
        theta = jax.tree.map(lambda a: a.astype(jnp.float64), init)
        tanh_model = lambda p, x: jnp.tanh(x @ p["dense0"]["kernel"] + p["dense0"]["bias"]) \
            @ p["head"]["kernel"] + p["head"]["bias"]

        def loss(p, batch, step):
            x, y = batch
            return jnp.mean((tanh_model(p, x) - y) ** 2)

        x = jnp.linspace(-2.0, 2.0, 7)[:, None]
        tasks = jax.tree.map(lambda a: a[None],
                             ((x, jnp.sin(2 * x)), (x + 0.1, jnp.sin(2 * x + 0.2))))
        steps, lam = 800, 5.0
        rates = mj.init_inner_lrs(theta, steps, 0.02, "scalar")
        algorithm = IMAML(lam=lam, cg_iterations=30)
        cfg = mj.MetaConfig(num_inner_steps=steps, unroll=1, algorithm=algorithm)
        _, grads, _ = jax.jit(functools.partial(mj.meta_gradient, loss_fn=loss, config=cfg,
                                                phase=None))(
            {"params": theta, "inner_lrs": rates}, tasks, step=0)
        flat, unravel = jax.flatten_util.ravel_pytree(theta)

        @jax.jit
        def meta_loss(v):
            p = unravel(v)
            adapted = algorithm.adapt(loss, p, rates, jax.tree.map(lambda a: a[0], tasks[0]),
                                      config=cfg)
            return loss(adapted, jax.tree.map(lambda a: a[0], tasks[1]), steps - 1)

        fd = _fd(lambda v: float(meta_loss(jnp.asarray(v))), np.asarray(flat), eps=1e-5)
        got = np.asarray(jax.flatten_util.ravel_pytree(grads["params"])[0])
        np.testing.assert_allclose(got, fd, rtol=1e-5, atol=1e-7)
