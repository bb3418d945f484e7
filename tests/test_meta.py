"""The outer step, models, the facade and the error messages."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import maml_jax as mj

MLP_LOSS = mj.make_loss_fn(mj.MLP(hidden=(16, 16)), "mse")


def _sinusoid_state(num_steps=2, granularity="layer_step", seed=0, lr=1e-3):
    params = mj.MLP(hidden=(16, 16)).init(jax.random.PRNGKey(seed), jnp.zeros((1, 1)))["params"]
    lrs = mj.init_inner_lrs(params, num_steps, 0.01, granularity)
    opt = optax.adam(lr)
    return mj.init_meta_state(params, lrs, opt, jax.random.PRNGKey(seed + 1)), opt


def _sin_tasks(key, data=None, num_tasks=4):
    return mj.sample_sinusoid_tasks(key, num_tasks, 10, 10)


def test_jit_and_no_jit_agree_and_no_recompile():
    config = mj.MetaConfig(num_inner_steps=2, iterations_per_epoch=10)
    state, opt = _sinusoid_state()
    tasks = _sin_tasks(jax.random.PRNGKey(3))
    kw = dict(loss_fn=MLP_LOSS, optimizer=opt, config=config, first_order=False, msl=True)
    ref_state, ref_m = mj.outer_step(state, tasks, **kw)
    state_copy = jax.tree.map(jnp.copy, state)
    before = mj.jit_outer_step._cache_size()
    s1, m1 = mj.jit_outer_step(state_copy, tasks, **kw)
    after_first = mj.jit_outer_step._cache_size()
    np.testing.assert_allclose(m1["loss"], ref_m["loss"], rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                 ref_state.meta_params, jax.device_get(s1.meta_params))
    s2, m2 = mj.jit_outer_step(s1, _sin_tasks(jax.random.PRNGKey(4)), **kw)
    assert mj.jit_outer_step._cache_size() == after_first == before + 1  # no recompile
    assert s1.step.is_deleted()  # the state was donated
    assert int(s2.step) == 2


def test_vmap_and_map_task_batching_agree():
    state, opt = _sinusoid_state()
    tasks = _sin_tasks(jax.random.PRNGKey(5))
    out = {}
    for b in ("vmap", "map"):
        config = mj.MetaConfig(num_inner_steps=2, task_batching=b)
        out[b] = mj.outer_step(state, tasks, loss_fn=MLP_LOSS, optimizer=opt, config=config,
                               first_order=False, msl=True)
    np.testing.assert_allclose(out["vmap"][1]["loss"], out["map"][1]["loss"], rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                 out["vmap"][0].meta_params, out["map"][0].meta_params)


def test_meta_gradient_is_mean_of_task_gradients():
    state, _ = _sinusoid_state()
    sgd = optax.sgd(1.0)
    state = state._replace(opt_state=sgd.init(state.meta_params))
    tasks = _sin_tasks(jax.random.PRNGKey(6), num_tasks=3)
    config = mj.MetaConfig(num_inner_steps=2, iterations_per_epoch=1000)
    new, _ = jax.jit(lambda st: mj.outer_step(st, tasks, loss_fn=MLP_LOSS, optimizer=sgd,
                                              config=config, first_order=False, msl=True))(state)
    w = mj.msl_weights(0, 2, config.msl_epochs)
    grads = []
    for i in range(3):
        s = jax.tree.map(lambda x: x[i], tasks[0])
        q = jax.tree.map(lambda x: x[i], tasks[1])
        f = lambda mp: mj.task_loss(MLP_LOSS, mp["params"], mp["inner_lrs"], s, q,
                                    num_steps=2, step_weights=w, has_aux=True)[0]
        grads.append(jax.grad(f)(state.meta_params))
    mean_grad = jax.tree.map(lambda *g: sum(g) / 3, *grads)
    got = jax.tree.map(lambda a, b: a - b, state.meta_params, new.meta_params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                 got, mean_grad)


def test_sinusoid_loss_decreases_with_train_steps():
    config = mj.MetaConfig(num_inner_steps=1, msl=False, iterations_per_epoch=1000)
    state, opt = _sinusoid_state(num_steps=1, lr=3e-3)
    sample = lambda key, data: mj.sample_sinusoid_tasks(key, 8, 10, 10)
    kw = dict(sample_tasks=sample, num_steps=100, loss_fn=MLP_LOSS, optimizer=opt,
              config=config, first_order=False, msl=False)
    eval_tasks = mj.sinusoid_eval_tasks(seed=0, num_tasks=100, k_support=10, k_query=50)

    def post_adaptation_mse(st):
        losses, _ = mj.jit_evaluate_tasks(MLP_LOSS, st.meta_params["params"],
                                          st.meta_params["inner_lrs"], eval_tasks, num_steps=1)
        return float(np.mean(losses[:, -1]))

    before = post_adaptation_mse(state)
    for _ in range(3):
        state, metrics = mj.jit_train_steps(state, None, **kw)
    assert int(state.step) == 300 and bool(np.all(metrics["finite"]))
    after = post_adaptation_mse(state)
    assert after < 0.7 * before, (before, after)


def test_train_steps_draw_tasks_from_step_number():
    """The same root key and step give the same tasks: a resumed run repeats itself."""
    config = mj.MetaConfig(num_inner_steps=1, msl=False)
    state, opt = _sinusoid_state(num_steps=1)
    sample = lambda key, data: mj.sample_sinusoid_tasks(key, 4, 5, 5)
    kw = dict(sample_tasks=sample, loss_fn=MLP_LOSS, optimizer=opt, config=config,
              first_order=False, msl=False)
    run = jax.jit(lambda st, k: mj.train_steps(st, None, num_steps=k, **kw), static_argnums=1)
    one_call, _ = run(state, 4)
    two_calls, _ = run(state, 2)
    two_calls, _ = run(two_calls, 2)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), one_call, two_calls)


def test_learn_inner_lrs_false_keeps_rates_fixed():
    state, opt = _sinusoid_state()
    tasks = _sin_tasks(jax.random.PRNGKey(7))
    for learn in (False, True):
        config = mj.MetaConfig(num_inner_steps=2, learn_inner_lrs=learn)
        new, _ = mj.outer_step(state, tasks, loss_fn=MLP_LOSS, optimizer=opt, config=config,
                               first_order=False, msl=True)
        changed = [not np.allclose(a, b) for a, b in zip(
            jax.tree.leaves(state.meta_params["inner_lrs"]),
            jax.tree.leaves(new.meta_params["inner_lrs"]))]
        assert any(changed) == learn


def test_phase_schedule():
    config = mj.MetaConfig(msl_epochs=10, first_order_epochs=3)
    assert mj.phase(config, 0) == (True, True)
    assert mj.phase(config, 3) == (False, True)
    assert mj.phase(config, 10) == (False, False)
    assert mj.phase(mj.MetaConfig(first_order=True, msl=False), 50) == (True, False)


def test_meta_lr_schedule_is_cosine_per_epoch():
    s = mj.meta_lr_schedule(1e-3, 1e-5, 100, 500)
    np.testing.assert_allclose(s(0), 1e-3, rtol=1e-6)
    np.testing.assert_allclose(s(499), 1e-3, rtol=1e-6)  # constant within an epoch
    np.testing.assert_allclose(s(50 * 500), (1e-3 + 1e-5) / 2, rtol=1e-5)
    np.testing.assert_allclose(s(100 * 500), 1e-5, rtol=1e-5)
    smooth = mj.meta_lr_schedule(1e-3, 1e-5, 100, 500, per_epoch=False)
    assert float(smooth(250)) < 1e-3


# -- non-finite and shape errors ----------------------------------------------------------

def test_non_finite_loss_keeps_state_and_raises_clear_error():
    state, opt = _sinusoid_state()
    (xs, ys), (xq, yq) = _sin_tasks(jax.random.PRNGKey(8))
    yq = yq.at[0, 0, 0].set(jnp.nan)
    config = mj.MetaConfig(num_inner_steps=2)
    new, metrics = mj.outer_step(state, ((xs, ys), (xq, yq)), loss_fn=MLP_LOSS, optimizer=opt,
                                 config=config, first_order=False, msl=True)
    assert not bool(metrics["finite"])
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b),
                 state.meta_params, new.meta_params)
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(new.meta_params))
    with pytest.raises(mj.NonFiniteLossError, match="non-finite meta loss .* outer step 41"):
        mj.check_finite(jax.device_get(metrics), 41)


def test_mismatched_task_shapes_error_messages():
    state, opt = _sinusoid_state()
    (xs, ys), (xq, yq) = _sin_tasks(jax.random.PRNGKey(9))
    kw = dict(loss_fn=MLP_LOSS, optimizer=opt, config=mj.MetaConfig(num_inner_steps=2),
              first_order=False, msl=True)
    with pytest.raises(ValueError, match="disagree on the number of tasks"):
        mj.outer_step(state, ((xs, ys), (xq[:3], yq[:3])), **kw)
    with pytest.raises(ValueError, match="example shapes differ"):
        mj.outer_step(state, ((xs, ys), (jnp.concatenate([xq, xq], -1), yq)), **kw)
    with pytest.raises(ValueError, match="support arrays disagree on the number of examples"):
        mj.outer_step(state, ((xs, ys[:, :4]), (xq, yq)), **kw)
    with pytest.raises(ValueError, match="differ in structure"):
        mj.outer_step(state, ((xs, ys), (xq,)), **kw)


def test_config_errors():
    with pytest.raises(ValueError, match="num_inner_steps must be an int >= 1"):
        mj.MetaConfig(num_inner_steps=0)
    with pytest.raises(ValueError, match="unknown task_batching 'pmap'"):
        mj.MetaConfig(task_batching="pmap")
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        mj.make_loss_fn(mj.MLP(), "hinge")


def test_mean_ci95():
    m, ci = mj.mean_ci95([1.0, 2.0, 3.0, 4.0])
    assert m == 2.5
    np.testing.assert_allclose(ci, 1.96 * np.std([1, 2, 3, 4], ddof=1) / 2)
    with pytest.raises(ValueError, match="at least 2"):
        mj.mean_ci95([1.0])


# -- models -------------------------------------------------------------------------------

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
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 1)))
    params = variables["params"]
    params["norm0"]["scale"] = params["norm0"]["scale"].at[1].set(2.0)
    x = jax.random.uniform(jax.random.PRNGKey(1), (4, 28, 28, 1))
    out = [model.apply({"params": params}, x, step=s, mutable=["batch_stats"])[0]
           for s in range(3)]
    np.testing.assert_allclose(out[0], out[2], rtol=1e-6)
    assert not np.allclose(out[0], out[1])
    # Batch statistics: the output does not depend on running stats unless asked to.
    stats = jax.tree.map(lambda a: a + 5.0, variables["batch_stats"])
    with_ra = model.apply({"params": params, "batch_stats": stats}, x, step=0,
                          use_running_average=True)
    assert not np.allclose(with_ra, out[0])


def test_inner_loop_mask_excludes_batch_norm():
    params = mj.Conv4(num_classes=2, num_filters=4).init(
        jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 1)))["params"]
    mask = mj.inner_loop_mask(params)
    assert mask["conv0"]["kernel"] and mask["head"]["bias"]
    assert not mask["norm0"]["scale"] and not mask["norm3"]["bias"]


def test_running_statistics_follow_batch_statistics():
    model = mj.Conv4(num_classes=2, num_filters=4, num_steps=2)
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 1)))
    params = variables["params"]
    lrs = mj.init_inner_lrs(params, 2, 0.1, mask=mj.inner_loop_mask(params))
    opt = optax.adam(1e-3)
    state = mj.init_meta_state(params, lrs, opt, jax.random.PRNGKey(0),
                               model_state=variables["batch_stats"])
    x = 3.0 + jax.random.uniform(jax.random.PRNGKey(1), (2, 4, 28, 28, 1))
    y = jnp.tile(jnp.array([0, 1, 0, 1]), (2, 1))
    loss_fn = mj.make_loss_fn(model, collect_bn_stats=True)
    config = mj.MetaConfig(num_inner_steps=2, bn_momentum=0.5)
    new, _ = mj.outer_step(state, ((x, y), (x, y)), loss_fn=loss_fn, optimizer=opt,
                           config=config, first_order=False, msl=True)
    mean0 = new.model_state["norm0"]["mean"]
    assert mean0.shape == (2, 4)
    # Momentum 0.5 from zeros: half the task-averaged batch mean of the first layer's
    # query pass after one inner update (step index 0).
    support_loss = lambda p, b, t: loss_fn(p, b, t)[0]
    expected = []
    for task in range(2):
        batch = (x[task], y[task])
        adapted = mj.adapt(support_loss, params, mj.extend_inner_lrs(lrs, 1), batch,
                           num_steps=1)
        expected.append(loss_fn(adapted, batch, 0)[1]["bn_stats"]["norm0"]["mean"])
    np.testing.assert_allclose(mean0[0], 0.5 * np.mean(expected, axis=0), rtol=1e-4, atol=1e-6)
    # The variance slot starts at one and moves towards the (unbiased) batch variance.
    assert not np.allclose(new.model_state["norm0"]["var"], 1.0)


def test_conv4_smoke_outer_step():
    """One real (64-filter) Conv4 second-order MAML++ step, 5-way 1-shot, 2 tasks."""
    maml = mj.ModelAgnosticMetaLearning(mj.Conv4(num_classes=5), inner_lr=0.1,
                                        inner_steps=2, plus_plus=True)
    rng = np.random.RandomState(0)
    xs = rng.rand(2, 5, 28, 28, 1).astype(np.float32)
    ys = np.tile(np.arange(5), (2, 1))
    loss = maml.meta_train_step(xs, ys, xs, ys)
    assert np.isfinite(loss)
    assert maml.inner_lrs["conv1"]["kernel"].shape == (2,)
    assert maml.inner_lrs["norm1"]["scale"] is None
    assert maml.params["norm0"]["scale"].shape == (2, 64)


# -- facade -------------------------------------------------------------------------------

@pytest.mark.parametrize("plus_plus", [True, False])
def test_facade_runs_and_learns(plus_plus):
    maml = mj.ModelAgnosticMetaLearning(mj.MLP(hidden=(16, 16)), inner_lr=0.01,
                                        outer_lr=3e-3, inner_steps=2, plus_plus=plus_plus,
                                        loss="mse", iterations_per_epoch=20, msl_epochs=2)
    losses = []
    for i in range(60):
        (xs, ys), (xq, yq) = mj.sample_sinusoid_tasks(jax.random.PRNGKey(i), 8, 10, 10)
        losses.append(maml.meta_train_step(xs, ys, xq, yq))
    assert maml.step == 60 and maml.epoch == 3
    assert np.mean(losses[-15:]) < np.mean(losses[:15])
    lr_leaf = maml.inner_lrs["dense0"]["kernel"]
    if plus_plus:
        assert lr_leaf.shape == (2,) and not np.allclose(lr_leaf, 0.01)
    else:
        assert lr_leaf.shape == () and np.allclose(lr_leaf, 0.01)
    ev = maml.evaluate(xs, ys, xq, yq, num_steps=4)
    assert ev["loss"].shape == (8, 5)
    adapted = maml.adapt(xs[0], ys[0])
    assert jax.tree.structure(adapted) == jax.tree.structure(maml.params)


def test_facade_errors():
    maml = mj.ModelAgnosticMetaLearning(mj.MLP(), loss="mse", inner_steps=1)
    with pytest.raises(RuntimeError, match="call meta_train_step"):
        maml.adapt(np.zeros((5, 1)), np.zeros((5, 1)))
    with pytest.raises(ValueError, match="example shapes differ"):
        maml.meta_train_step(np.zeros((2, 5, 1)), np.zeros((2, 5, 1)),
                             np.zeros((2, 5, 2)), np.zeros((2, 5, 1)))
    with pytest.raises(ValueError, match="unknown granularity"):
        mj.ModelAgnosticMetaLearning(mj.MLP(), lr_granularity="per_tensor")
    bad = mj.ModelAgnosticMetaLearning(mj.MLP(), loss="mse", inner_steps=1, outer_lr=1.0)
    with pytest.raises(mj.NonFiniteLossError, match="non-finite meta loss"):
        bad.meta_train_step(np.full((2, 5, 1), np.inf, np.float32), np.zeros((2, 5, 1)),
                            np.zeros((2, 5, 1)), np.zeros((2, 5, 1)))


def test_unroll_auto_falls_back_to_one_with_remat():
    from maml_jax import meta
    assert meta._unroll(mj.MetaConfig(num_inner_steps=5, remat=True)) == 1
    assert meta._unroll(mj.MetaConfig(num_inner_steps=3, unroll=2, remat=True)) == 2
    expected = 3 if jax.default_backend() == "cpu" else 1
    assert meta._unroll(mj.MetaConfig(num_inner_steps=3)) == expected
    with pytest.raises(ValueError, match="unroll must be an int, a bool or 'auto'"):
        mj.MetaConfig(unroll="full")


@pytest.mark.parametrize("size", [28, 7, 3])
def test_max_pool_2x2_equals_flax_max_pool(size):
    import flax.linen as nn
    x = jax.random.normal(jax.random.PRNGKey(size), (2, size, size, 3))  # no exact ties
    ref = lambda v: nn.max_pool(v, (2, 2), strides=(2, 2), padding="VALID")
    np.testing.assert_array_equal(mj.max_pool_2x2(x), ref(x))
    w = jax.random.normal(jax.random.PRNGKey(1), ref(x).shape)
    g = lambda f: jax.grad(lambda v: jnp.sum(jnp.tanh(f(v)) * w))(x)
    np.testing.assert_allclose(g(mj.max_pool_2x2), g(ref), rtol=1e-6, atol=1e-7)


def test_make_meta_optimizer_scales_inner_lr_updates():
    mp = {"params": {"w": jnp.ones(3)}, "inner_lrs": {"w": jnp.full((2,), 0.1), "b": None}}
    grads = {"params": {"w": jnp.array([1.0, -2.0, 30.0])},
             "inner_lrs": {"w": jnp.array([0.5, -0.5]), "b": None}}
    plain = mj.make_meta_optimizer(1e-2)
    scaled = mj.make_meta_optimizer(1e-2, inner_lr_scale=0.1)
    u1, _ = plain.update(grads, plain.init(mp), mp)
    u2, _ = scaled.update(grads, scaled.init(mp), mp)
    np.testing.assert_allclose(u2["inner_lrs"]["w"], 0.1 * u1["inner_lrs"]["w"], rtol=1e-6)
    np.testing.assert_allclose(u2["params"]["w"], u1["params"]["w"], rtol=1e-6)
    assert u2["inner_lrs"]["b"] is None
