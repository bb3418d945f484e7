"""Reptile against its closed form: inner SGD (and Adam) on linear-regression tasks in float64,
the update ``theta + eps (mean(phi) - theta)``, and the paths every algorithm takes."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import maml_jax as mj
from maml_jax import parallel
from maml_jax.algorithms import Reptile

STEPS = 3
DIM = 4


def _linear_loss(params, batch, step):
    x, y = batch
    return jnp.mean((x @ params["w"] + params["b"] - y) ** 2)


def _tasks(seed=0, num_tasks=3, shots=6, dtype=np.float64):
    rng = np.random.RandomState(seed)
    xs = rng.randn(num_tasks, shots, DIM).astype(dtype)
    xq = rng.randn(num_tasks, shots, DIM).astype(dtype)
    true_w = rng.randn(num_tasks, DIM).astype(dtype)
    ys = np.einsum("tnd,td->tn", xs, true_w)
    yq = np.einsum("tnd,td->tn", xq, true_w)
    return (jnp.asarray(xs), jnp.asarray(ys)), (jnp.asarray(xq), jnp.asarray(yq))


def _params(dtype=np.float64):
    rng = np.random.RandomState(7)
    return {"w": jnp.asarray(rng.randn(DIM).astype(dtype)), "b": jnp.asarray(dtype(0.3))}


def _sgd_closed_form(w, b, x, y, rates):
    """Inner SGD on mean((x w + b - y)^2) in numpy: per step the gradient is
    (2/n) [x^T r, sum r] with r = x w + b - y."""
    n = len(y)
    for lr in rates:
        r = x @ w + b - y
        w, b = w - lr * 2.0 / n * x.T @ r, b - lr * 2.0 / n * r.sum()
    return w, b


def _adam_closed_form(w, b, x, y, rates, b1=0.0, b2=0.999, eps=1e-8):
    n = len(y)
    m = [np.zeros_like(w), 0.0]
    v = [np.zeros_like(w), 0.0]
    for t, lr in enumerate(rates, start=1):
        r = x @ w + b - y
        g = [2.0 / n * x.T @ r, 2.0 / n * r.sum()]
        m = [b1 * m_ + (1 - b1) * g_ for m_, g_ in zip(m, g, strict=True)]
        v = [b2 * v_ + (1 - b2) * g_ ** 2 for v_, g_ in zip(v, g, strict=True)]
        step = [(m_ / (1 - b1 ** t)) / (np.sqrt(v_ / (1 - b2 ** t)) + eps)
                for m_, v_ in zip(m, v, strict=True)]
        w, b = w - lr * step[0], b - lr * step[1]
    return w, b


def _meta_gradient(algorithm, granularity="layer_step", **config):
    params = _params()
    rates = mj.init_inner_lrs(params, STEPS, 0.05, granularity)
    rates = jax.tree.map(lambda r: r * jnp.linspace(1.0, 2.0, r.shape[0]).reshape(
        (-1,) + (1,) * (r.ndim - 1)) if r.ndim else r, rates)   # distinct rates per step
    cfg = mj.MetaConfig(num_inner_steps=STEPS, algorithm=algorithm, **config)
    fn = functools.partial(mj.meta_gradient, loss_fn=_linear_loss, config=cfg,
                           phase=mj.phase(cfg, 0))
    return params, rates, fn


def _expected(params, rates, tasks, closed_form):
    (xs, ys), _ = tasks
    per_step = [float(np.asarray(rates["w"])[t]) for t in range(STEPS)]
    adapted = [closed_form(np.asarray(params["w"]), float(params["b"]), np.asarray(xs[i]),
                           np.asarray(ys[i]), per_step) for i in range(xs.shape[0])]
    return {"w": np.asarray(params["w"]) - np.mean([a[0] for a in adapted], axis=0),
            "b": float(params["b"]) - np.mean([a[1] for a in adapted])}


@pytest.mark.parametrize("optimizer, closed_form", [("sgd", _sgd_closed_form),
                                                    ("adam", _adam_closed_form)])
def test_reptile_direction_is_theta_minus_the_mean_adapted_weights(optimizer, closed_form):
    with jax.enable_x64(True):
        tasks = _tasks()
        params, rates, fn = _meta_gradient(Reptile(inner_optimizer=optimizer))
        loss, grads, extras = fn({"params": params, "inner_lrs": rates}, tasks, step=0)
        want = _expected(params, rates, tasks, closed_form)
        np.testing.assert_allclose(grads["params"]["w"], want["w"], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(grads["params"]["b"], want["b"], rtol=1e-10, atol=1e-12)
        # the rates are not learned; only the final entry of per_step_loss is set
        assert all(float(jnp.max(jnp.abs(g))) == 0.0 for g in jax.tree.leaves(grads["inner_lrs"]))
        assert extras["per_step_loss"].shape == (3, STEPS)
        np.testing.assert_array_equal(extras["per_step_loss"][:, :-1], 0.0)
        assert float(loss) == pytest.approx(float(jnp.mean(extras["per_step_loss"][:, -1])))


def test_reptile_outer_sgd_step_is_the_reptile_update():
    """With SGD(eps) as the meta-optimizer, one outer step is theta + eps (mean phi - theta)."""
    with jax.enable_x64(True):
        tasks = _tasks(seed=3)
        eps = 0.25
        params, rates, _ = _meta_gradient(Reptile())
        cfg = mj.MetaConfig(num_inner_steps=STEPS, algorithm=Reptile())
        opt = optax.sgd(eps)
        state = mj.init_meta_state(params, rates, opt, jax.random.PRNGKey(0))
        new, metrics = mj.outer_step(state, tasks, loss_fn=_linear_loss, optimizer=opt,
                                     config=cfg, phase=mj.phase(cfg, 0))
        want = _expected(params, rates, tasks, _sgd_closed_form)
        mean_phi_w = np.asarray(params["w"]) - want["w"]
        np.testing.assert_allclose(new.meta_params["params"]["w"],
                                   np.asarray(params["w"]) + eps * (mean_phi_w - params["w"]),
                                   rtol=1e-10, atol=1e-12)
        jax.tree.map(np.testing.assert_array_equal, new.meta_params["inner_lrs"], rates)
        assert bool(metrics["finite"]) and int(new.step) == 1


def test_reptile_under_jit_equals_no_jit_and_vmap_equals_map():
    tasks = _tasks(dtype=np.float32)
    params = jax.tree.map(lambda a: a.astype(jnp.float32), _params())
    rates = mj.init_inner_lrs(params, STEPS, 0.05, "parameter")
    outs = []
    for batching in ("vmap", "map"):
        cfg = mj.MetaConfig(num_inner_steps=STEPS, algorithm=Reptile(), task_batching=batching)
        fn = functools.partial(mj.meta_gradient, loss_fn=_linear_loss, config=cfg, phase=None)
        mp = {"params": params, "inner_lrs": rates}
        eager = fn(mp, tasks, step=0)
        jitted = jax.jit(fn)(mp, tasks, step=0)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                     eager[:2], jitted[:2])
        outs.append(jitted[:2])
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), *outs)


def test_reptile_trains_a_conv4_with_batch_norm_on_every_path():
    """Conv4 with per-step BN (running statistics from the final query pass), the facade,
    and a population of two seeds under jit_train_steps."""
    ways, steps = 3, 2
    model = mj.Conv4(num_classes=ways, num_filters=4, num_blocks=2, num_steps=steps)
    rng = np.random.RandomState(0)

    def tasks_of(num_tasks):
        x = rng.rand(num_tasks, ways, 12, 12, 1).astype(np.float32)
        y = np.tile(np.arange(ways), (num_tasks, 1)).astype(np.int32)
        return (jnp.asarray(x), jnp.asarray(y)), (jnp.asarray(x + 0.1), jnp.asarray(y))

    maml = mj.ModelAgnosticMetaLearning(model, inner_lr=0.1, inner_steps=steps,
                                        algorithm=Reptile(inner_optimizer="adam"))
    (xs, ys), (xq, yq) = tasks_of(2)
    first = maml.meta_train_step(xs, ys, xq, yq)
    before = jax.tree.map(np.asarray, maml.state.model_state)
    maml.meta_train_step(xs, ys, xq, yq)
    assert np.isfinite(first) and maml.step == 2
    assert "algorithm=Reptile(" in repr(maml)
    # the last per-step slot of the running statistics moved, the others did not
    moved = jax.tree.map(lambda a, b: bool(np.any(a != b)), before,
                         jax.tree.map(np.asarray, maml.state.model_state))
    mean0 = jax.tree.map(lambda a, b: bool(np.any(a[:-1] != b[:-1])), before,
                         jax.tree.map(np.asarray, maml.state.model_state))
    assert any(jax.tree.leaves(moved)) and not any(jax.tree.leaves(mean0))

    cfg = mj.MetaConfig(num_inner_steps=steps, algorithm=Reptile())
    opt = optax.adam(1e-3)
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 12, 12, 1)))
    lrs = mj.init_inner_lrs(variables["params"], steps, 0.1,
                            mask=mj.inner_loop_mask(variables))
    states = [mj.init_meta_state(variables["params"], lrs, opt, jax.random.PRNGKey(s),
                                 model_state=variables["batch_stats"]) for s in range(2)]
    data = tasks_of(4)
    sample = lambda key, d: jax.tree.map(
        lambda a: a[jax.random.randint(key, (2,), 0, 4)], d)
    population, metrics = parallel.jit_train_steps(
        parallel.stack_states(states), data, population=True, sample_tasks=sample,
        num_steps=2, loss_fn=mj.make_loss_fn(model, collect_bn_stats=True), optimizer=opt,
        config=cfg, phase=None)
    assert metrics["loss"].shape == (2, 2) and bool(jnp.all(metrics["finite"]))
    np.testing.assert_array_equal(population.step, [2, 2])


def test_reptile_settings_are_checked():
    with pytest.raises(ValueError, match="inner_optimizer"):
        Reptile(inner_optimizer="rmsprop")
    with pytest.raises(ValueError, match="adam_b1"):
        Reptile(adam_b1=1.0)
    with pytest.raises(ValueError, match="registered"):
        mj.make_algorithm("reptyle")
    with pytest.raises(ValueError, match="algorithm must be"):
        mj.MetaConfig(algorithm="reptile")


def test_the_facade_takes_a_registered_name():
    maml = mj.ModelAgnosticMetaLearning(mj.MLP(hidden=(8,)), loss="mse", algorithm="reptile")
    assert maml.config.algorithm == Reptile()
    with pytest.raises(ValueError, match="registered"):
        mj.ModelAgnosticMetaLearning(mj.MLP(hidden=(8,)), loss="mse", algorithm="reptyle")
