"""The outer step, models, the facade and the error messages."""

import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import maml_jax as mj

MLP_LOSS = mj.make_loss_fn(mj.MLP(hidden=(16, 16)), "mse")
# A static argument of the jitted steps: one instance, so that tests share compiles.
_SHARED_ADAM = optax.adam(1e-3)


def _sinusoid_state(num_steps=2, granularity="layer_step", seed=0, lr=1e-3):
    params = mj.MLP(hidden=(16, 16)).init(jax.random.PRNGKey(seed), jnp.zeros((1, 1)))["params"]
    lrs = mj.init_inner_lrs(params, num_steps, 0.01, granularity)
    opt = optax.adam(lr)
    return mj.init_meta_state(params, lrs, opt, jax.random.PRNGKey(seed + 1)), opt


def _sin_tasks(key, data=None, num_tasks=4):
    return mj.sample_sinusoid_tasks(key, num_tasks, 10, 10)


def _grad_kw(config, first_order=False, msl=True, loss_fn=MLP_LOSS):
    return dict(loss_fn=loss_fn, config=config, first_order=first_order, msl=msl)


def _assert_trees_close(a, b, rtol=1e-5, atol=1e-7):
    chex.assert_trees_all_close(a, b, rtol=rtol, atol=atol)  # structure, then values


def _assert_conv4_grads_close(a, b, rtol=1e-4, atol=1e-6):
    """Meta-gradients of a Conv4, less the conv biases (and their rates): each feeds a batch
    norm with batch statistics, so its exact gradient is zero and any value is rounding."""
    def drop_conv_biases(tree):
        return jax.tree_util.tree_map_with_path(
            lambda path, x: None if (str(path[-2].key).startswith("conv") and
                                     path[-1].key == "bias") else x, tree)
    _assert_trees_close(drop_conv_biases(a), drop_conv_biases(b), rtol=rtol, atol=atol)


def test_jit_and_no_jit_agree_and_no_recompile():
    config = mj.MetaConfig(num_inner_steps=2, iterations_per_epoch=10)
    state, opt = _sinusoid_state()
    tasks = _sin_tasks(jax.random.PRNGKey(3))
    # The raw meta-gradients (not through Adam, whose first step is ~lr * sign(g)).
    grad_kw = _grad_kw(config)
    loss, grads, _ = mj.meta_gradient(state.meta_params, tasks, step=state.step, **grad_kw)
    j_loss, j_grads, _ = jax.jit(functools.partial(mj.meta_gradient, **grad_kw))(
        state.meta_params, tasks, step=state.step)
    np.testing.assert_allclose(j_loss, loss, rtol=1e-6)
    _assert_trees_close(j_grads, grads)
    assert max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grads)) > 1e-3

    kw = dict(loss_fn=MLP_LOSS, optimizer=opt, config=config, first_order=False, msl=True)
    ref_state, ref_m = mj.outer_step(state, tasks, **kw)
    state_copy = jax.tree.map(jnp.copy, state)
    before = mj.jit_outer_step._cache_size()
    s1, m1 = mj.jit_outer_step(state_copy, tasks, **kw)
    after_first = mj.jit_outer_step._cache_size()
    np.testing.assert_allclose(m1["loss"], ref_m["loss"], rtol=1e-5)
    np.testing.assert_allclose(m1["grad_norm"], ref_m["grad_norm"], rtol=1e-5)
    np.testing.assert_allclose(m1["grad_norm"], optax.tree.norm(grads), rtol=1e-5)
    _assert_trees_close(jax.device_get(s1.meta_params), ref_state.meta_params, rtol=1e-4,
                        atol=1e-6)
    s2, _m2 = mj.jit_outer_step(s1, _sin_tasks(jax.random.PRNGKey(4)), **kw)
    assert mj.jit_outer_step._cache_size() == after_first == before + 1  # no recompile
    assert s1.step.is_deleted()  # the state was donated
    assert int(s2.step) == 2


def test_vmap_and_map_task_batching_agree():
    state, _ = _sinusoid_state()
    tasks = _sin_tasks(jax.random.PRNGKey(5))
    out = {}
    for b in ("vmap", "map"):
        config = mj.MetaConfig(num_inner_steps=2, task_batching=b)
        out[b] = mj.meta_gradient(state.meta_params, tasks, step=state.step,
                                  **_grad_kw(config))
    np.testing.assert_allclose(out["vmap"][0], out["map"][0], rtol=1e-6)
    _assert_trees_close(out["vmap"][1], out["map"][1])
    _assert_trees_close(out["vmap"][2]["per_step_loss"], out["map"][2]["per_step_loss"])


def test_meta_gradient_is_mean_of_task_gradients():
    state, _ = _sinusoid_state()
    tasks = _sin_tasks(jax.random.PRNGKey(6), num_tasks=3)
    config = mj.MetaConfig(num_inner_steps=2, iterations_per_epoch=1000)
    _, got, _ = jax.jit(functools.partial(mj.meta_gradient, **_grad_kw(config)))(
        state.meta_params, tasks, step=state.step)
    w = mj.msl_weights(0, 2, config.msl_epochs)
    grads = []
    for i in range(3):
        s = jax.tree.map(lambda x: x[i], tasks[0])
        q = jax.tree.map(lambda x: x[i], tasks[1])
        f = lambda mp: mj.task_loss(MLP_LOSS, mp["params"], mp["inner_lrs"], s, q,
                                    num_steps=2, step_weights=w, has_aux=True)[0]
        grads.append(jax.grad(f)(state.meta_params))
    mean_grad = jax.tree.map(lambda *g: sum(g) / 3, *grads)
    _assert_trees_close(got, mean_grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("step, epoch", [(0, 0), (9, 0), (10, 1), (37, 3), (99, 9), (100, 10),
                                         (1234, 123)])
def test_outer_step_weights_losses_by_the_epoch_of_its_step(step, epoch):
    """The MSL weights follow ``state.step // iterations_per_epoch`` (not the step)."""
    config = mj.MetaConfig(num_inner_steps=3, msl_epochs=10, iterations_per_epoch=10)
    state, _ = _sinusoid_state(num_steps=3)
    state = state._replace(step=jnp.int32(step))
    # One compile for every case: the step is traced, the static arguments are shared.
    _, metrics = mj.jit_outer_step(state, _sin_tasks(jax.random.PRNGKey(11)), loss_fn=MLP_LOSS,
                                   optimizer=_SHARED_ADAM, config=config, first_order=False,
                                   msl=True)
    w = np.asarray(mj.msl_weights(epoch, 3, 10))
    np.testing.assert_allclose(metrics["loss"], np.sum(w * metrics["per_step_loss"]), rtol=1e-5)
    per_step = np.asarray(metrics["per_step_loss"])
    assert len(set(np.round(per_step, 5))) == 3  # distinct losses: the weighting is visible


def test_train_steps_anneal_msl_weights_across_epochs():
    """Inside one ``train_steps`` call the epoch (and the MSL weights) moves with the step."""
    config = mj.MetaConfig(num_inner_steps=3, msl_epochs=2, iterations_per_epoch=2)
    state, opt = _sinusoid_state(num_steps=3)
    sample = lambda key, data: mj.sample_sinusoid_tasks(key, 4, 5, 5)
    _, metrics = mj.train_steps(state, None, sample_tasks=sample, num_steps=6, loss_fn=MLP_LOSS,
                                optimizer=opt, config=config, first_order=False, msl=True)
    for t in range(6):
        w = np.asarray(mj.msl_weights(t // 2, 3, 2))
        np.testing.assert_allclose(metrics["loss"][t], np.sum(w * metrics["per_step_loss"][t]),
                                   rtol=1e-5, err_msg=f"step {t}")


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
    chex.assert_trees_all_equal(one_call, two_calls)


def test_learn_inner_lrs_false_keeps_rates_fixed():
    state, _ = _sinusoid_state()
    tasks = _sin_tasks(jax.random.PRNGKey(7))
    for learn in (False, True):
        config = mj.MetaConfig(num_inner_steps=2, learn_inner_lrs=learn)
        new, _ = mj.jit_outer_step(jax.tree.map(jnp.copy, state), tasks, loss_fn=MLP_LOSS,
                                   optimizer=_SHARED_ADAM, config=config, first_order=False,
                                   msl=True)
        changed = [not np.allclose(a, b) for a, b in zip(
            jax.tree.leaves(state.meta_params["inner_lrs"]),
            jax.tree.leaves(new.meta_params["inner_lrs"]), strict=True)]
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
    state, _ = _sinusoid_state()
    (xs, ys), (xq, yq) = _sin_tasks(jax.random.PRNGKey(8))
    yq = yq.at[0, 0, 0].set(jnp.nan)
    config = mj.MetaConfig(num_inner_steps=2)  # the step learn_inner_lrs=True compiles
    new, metrics = mj.jit_outer_step(jax.tree.map(jnp.copy, state), ((xs, ys), (xq, yq)),
                                     loss_fn=MLP_LOSS, optimizer=_SHARED_ADAM, config=config,
                                     first_order=False, msl=True)
    assert not bool(metrics["finite"])
    chex.assert_trees_all_equal(state.meta_params, new.meta_params)
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(new.meta_params))
    with pytest.raises(mj.NonFiniteLossError, match=r"non-finite meta loss .* outer step 41"):
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


@pytest.mark.parametrize("per_step_bn", [True, False])
def test_inner_loop_mask_excludes_batch_norm(per_step_bn):
    variables = jax.eval_shape(
        mj.Conv4(num_classes=2, num_filters=4, per_step_bn=per_step_bn).init,
        jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 1)))
    mask = mj.inner_loop_mask(variables)
    assert mask["conv0"]["kernel"] and mask["head"]["bias"]
    assert not mask["norm0"]["scale"] and not mask["norm3"]["bias"]
    # By batch statistics, by Conv4's names (params only): the same mask.
    assert mj.inner_loop_mask(variables["params"]) == mask
    assert mj.inner_loop_mask(variables["params"], variables["batch_stats"]) == mask


def test_inner_loop_mask_recognises_batch_norm_by_its_statistics():
    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.BatchNorm(use_running_average=False, name="bn")(nn.Dense(3)(x))
            return nn.Dense(2)(nn.LayerNorm()(x))

    variables = jax.eval_shape(Net().init, jax.random.PRNGKey(0), jnp.zeros((1, 2)))
    mask = mj.inner_loop_mask(variables)
    assert not mask["bn"]["scale"] and not mask["bn"]["bias"]
    assert mask["LayerNorm_0"]["scale"] and mask["Dense_0"]["kernel"]  # no batch statistics
    with pytest.raises(ValueError, match="cannot tell whether the scale/bias of module"):
        mj.inner_loop_mask(variables["params"])


# -- per-step indexing with per-step-distinct values ---------------------------------------

def _conv4_problem(num_filters=4, num_steps=3, num_tasks=2, ways=3, seed=0, blocks=2,
                   image=16):
    """A (by default 2-block, 16x16) Conv4 whose rates and BN weights differ at every inner
    step, and its tasks. Small, so that its second-order programs compile in seconds."""
    model = mj.Conv4(num_classes=ways, num_filters=num_filters, num_steps=num_steps,
                     num_blocks=blocks)
    variables = jax.jit(model.init)(jax.random.PRNGKey(seed), jnp.zeros((1, image, image, 1)))
    params = variables["params"]
    rng = np.random.RandomState(seed)
    for i in range(blocks):
        norm = params[f"norm{i}"]
        norm["scale"] = jnp.asarray(1 + 0.3 * rng.randn(*norm["scale"].shape), jnp.float32)
        norm["bias"] = jnp.asarray(0.2 * rng.randn(*norm["bias"].shape), jnp.float32)
    lrs = mj.init_inner_lrs(params, num_steps, 0.1, mask=mj.inner_loop_mask(params))
    lrs = jax.tree.map(lambda a: jnp.asarray(rng.uniform(0.02, 0.3, a.shape), jnp.float32), lrs)
    x = jnp.asarray(rng.rand(num_tasks, 2 * ways, image, image, 1), jnp.float32)
    y = jnp.tile(jnp.arange(2 * ways) % ways, (num_tasks, 1))
    tasks = ((x[:, :ways], y[:, :ways]), (x[:, ways:], y[:, ways:]))
    return model, variables, {"params": params, "inner_lrs": lrs}, tasks


def _loop_meta_loss(model, meta_params, tasks, weights, first_order=False):
    """An independent statement of the MAML++ task loss: a Python loop over inner steps
    (support loss and query loss after update i both with BN step i), mean over tasks."""
    params, lrs = meta_params["params"], meta_params["inner_lrs"]
    n = len(weights)

    def loss(p, x, y, i):
        logits, _ = model.apply({"params": p}, x, step=i, mutable=["batch_stats"])
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))

    (xs, ys), (xq, yq) = tasks
    total = []
    for t in range(xs.shape[0]):
        p, task_total = params, 0.0
        for i in range(n):
            g = jax.grad(loss)(p, xs[t], ys[t], i)
            if first_order:
                g = jax.lax.stop_gradient(g)
            p = jax.tree.map(lambda lr, w, d: w if lr is None else w - lr[i] * d, lrs, p, g,
                             is_leaf=lambda a: a is None)
            task_total = task_total + weights[i] * loss(p, xq[t], yq[t], i)
        total.append(task_total)
    return sum(total) / len(total)


def test_meta_gradient_matches_loop_with_per_step_distinct_values():
    # Second order (first order: test_core.test_first_order_equals_explicit_stop_gradient,
    # and the Conv4 first-order step against PyTorch in test_benchmark_equivalence).
    first_order = False
    model, _, meta_params, tasks = _conv4_problem()
    config = mj.MetaConfig(num_inner_steps=3, msl_epochs=5, iterations_per_epoch=10)
    loss_fn = mj.make_loss_fn(model, collect_bn_stats=True)
    step = jnp.int32(23)  # epoch 2: MSL weights 0.2 x 2 + 0.6, neither uniform nor one-hot
    weights = mj.msl_weights(2, 3, 5)
    assert len(set(np.round(np.asarray(weights), 6))) == 2
    loss, grads, extras = jax.jit(functools.partial(
        mj.meta_gradient, loss_fn=loss_fn, config=config, first_order=first_order, msl=True))(
            meta_params, tasks, step=step)
    ref_loss, ref_grads = jax.jit(jax.value_and_grad(
        lambda mp: _loop_meta_loss(model, mp, tasks, weights, first_order)))(meta_params)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
    _assert_conv4_grads_close(grads, ref_grads)
    assert extras["per_step_loss"].shape == (2, 3)


# remat: the full-size meta-gradient with remat against PyTorch float64 is in
# test_full_size_gradients.py (variant xla:map:5:1:select).


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
    model, variables, meta_params, ((xs, ys), _) = _conv4_problem()
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


@pytest.mark.parametrize("msl", [True, False], ids=["msl", "final_step_only"])
def test_running_statistics_follow_the_query_batch_statistics(msl):
    """Slot i moves towards the task-averaged statistics of the query pass after update i:
    every slot under MSL, only the last one with the final-step loss."""
    model, variables, meta_params, tasks = _conv4_problem(num_steps=3)
    loss_fn = mj.make_loss_fn(model, collect_bn_stats=True)
    opt = optax.adam(1e-3)
    start_stats = jax.tree.map(lambda a: a + jnp.arange(3.0)[:, None], variables["batch_stats"])
    state = mj.init_meta_state(meta_params["params"], meta_params["inner_lrs"], opt,
                               jax.random.PRNGKey(0), model_state=start_stats)
    config = mj.MetaConfig(num_inner_steps=3, bn_momentum=0.5, msl=msl)
    new, _ = mj.jit_outer_step(jax.tree.map(jnp.copy, state), tasks, loss_fn=loss_fn,
                               optimizer=opt, config=config, first_order=False, msl=msl)

    @jax.jit
    def query_stats(meta_params, tasks):
        """Per task and step: the query pass's batch statistics after update i (a loop)."""
        params, lrs = meta_params["params"], meta_params["inner_lrs"]
        (xs, ys), (xq, yq) = tasks
        out = []
        for t in range(xs.shape[0]):
            p, per_step = params, []
            for i in range(3):
                g = jax.grad(lambda q: loss_fn(q, (xs[t], ys[t]), i)[0])(p)
                p = jax.tree.map(lambda lr, w, d: w if lr is None else w - lr[i] * d, lrs, p,
                                 g, is_leaf=lambda a: a is None)
                per_step.append(loss_fn(p, (xq[t], yq[t]), i)[1]["bn_stats"])
            out.append(per_step)
        return out

    observed = query_stats(meta_params, tasks)
    moved = range(3) if msl else [2]
    for layer in ("norm0", "norm1"):
        for k in ("mean", "var"):
            old, got = start_stats[layer][k], new.model_state[layer][k]
            for i in range(3):
                if i not in moved:
                    np.testing.assert_array_equal(got[i], old[i], err_msg=f"{layer}/{k}[{i}]")
                    continue
                want = 0.5 * old[i] + 0.5 * np.mean([o[i][layer][k] for o in observed], axis=0)
                np.testing.assert_allclose(got[i], want, rtol=1e-4, atol=1e-5,
                                           err_msg=f"{layer}/{k}[{i}]")


def test_conv4_smoke_outer_step():
    """One real (64-filter) Conv4 second-order MAML++ step through the facade: its update
    against the shape of Adam's first step (the full-size gradient itself:
    test_full_size_gradients.py), its running statistics moved at every step."""
    maml = mj.ModelAgnosticMetaLearning(mj.Conv4(num_classes=5), inner_lr=0.1,
                                        inner_steps=2, plus_plus=True)
    rng = np.random.RandomState(0)
    xs = rng.rand(2, 5, 28, 28, 1).astype(np.float32)
    xq = rng.rand(2, 5, 28, 28, 1).astype(np.float32)
    ys = np.tile(np.arange(5), (2, 1))
    maml.init(xs[0])
    before = jax.tree.map(np.asarray, maml.state)
    loss = maml.meta_train_step(xs, ys, xq, ys)
    assert maml.inner_lrs["conv1"]["kernel"].shape == (2,)
    assert maml.inner_lrs["norm1"]["scale"] is None
    assert maml.params["norm0"]["scale"].shape == (2, 64)

    # (The loss against the Python-loop statement: test_meta_gradient_matches_loop_...)
    assert np.isfinite(loss) and loss > 0
    # Adam's first step moves every parameter by lr * |g| / (|g| + eps): by lr (1e-3) except
    # where the gradient is as small as eps (conv biases left out: their gradient is
    # rounding noise).
    for layer, layer_params in maml.params.items():
        for name, p in layer_params.items():
            if layer.startswith("conv") and name == "bias":
                continue
            moved = np.abs(np.asarray(p) - before.meta_params["params"][layer][name])
            assert moved.max() <= 1.01e-3, f"{layer}/{name}"
            assert np.isclose(moved, 1e-3, rtol=1e-2).mean() > 0.99, f"{layer}/{name}"
    assert np.isfinite(maml.last_metrics["grad_norm"]) and maml.last_metrics["grad_norm"] > 0
    # The running statistics moved at every step slot (MSL feeds every step's query pass).
    changed = np.asarray(maml.state.model_state["norm0"]["mean"]) != \
        before.model_state["norm0"]["mean"]
    assert changed.any(axis=1).all()


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
