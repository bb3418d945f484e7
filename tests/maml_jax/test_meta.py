"""maml_jax.meta, the outer step: meta-gradients, MSL weights, the train-steps loop, the
meta-optimizer and its learned-rate updates (log space, presets), the inner-gradient clip's
defaults and meta-gradient, and the error messages."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.test_util import check_grads

import maml_jax as mj
from maml_jax import core, meta
from maml_jax.algorithms.base import inner_unroll
from tests.support.problems import (
    MLP_LOSS,
    assert_trees_close,
    conv4_problem,
    grad_kwargs,
    sin_tasks,
    sinusoid_state,
    tanh_mlp_loss,
    tanh_mlp_problem,
)

# A static argument of the jitted steps: one instance, so that tests share compiles.
_SHARED_ADAM = optax.adam(1e-3)


def _assert_conv4_grads_close(a, b, rtol=1e-4, atol=1e-6):
    """Meta-gradients of a Conv4, less the conv biases (and their rates): each feeds a batch
    norm with batch statistics, so its exact gradient is zero and any value is rounding."""
    def drop_conv_biases(tree):
        return jax.tree_util.tree_map_with_path(
            lambda path, x: None if (str(path[-2].key).startswith("conv") and
                                     path[-1].key == "bias") else x, tree)
    assert_trees_close(drop_conv_biases(a), drop_conv_biases(b), rtol=rtol, atol=atol)


def test_jit_and_no_jit_agree_and_no_recompile():
    config = mj.MetaConfig(num_inner_steps=2, iterations_per_epoch=10)
    state, opt = sinusoid_state()
    tasks = sin_tasks(jax.random.PRNGKey(3))
    # The raw meta-gradients (not through Adam, whose first step is ~lr * sign(g)).
    grad_kw = grad_kwargs(config)
    loss, grads, _ = mj.meta_gradient(state.meta_params, tasks, step=state.step, **grad_kw)
    j_loss, j_grads, _ = jax.jit(functools.partial(mj.meta_gradient, **grad_kw))(
        state.meta_params, tasks, step=state.step)
    np.testing.assert_allclose(j_loss, loss, rtol=1e-6)
    assert_trees_close(j_grads, grads)
    assert max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grads)) > 1e-3

    kw = dict(loss_fn=MLP_LOSS, optimizer=opt, config=config, phase=(False, True))
    ref_state, ref_m = mj.outer_step(state, tasks, **kw)
    state_copy = jax.tree.map(jnp.copy, state)
    before = mj.jit_outer_step._cache_size()
    s1, m1 = mj.jit_outer_step(state_copy, tasks, **kw)
    after_first = mj.jit_outer_step._cache_size()
    np.testing.assert_allclose(m1["loss"], ref_m["loss"], rtol=1e-5)
    np.testing.assert_allclose(m1["grad_norm"], ref_m["grad_norm"], rtol=1e-5)
    np.testing.assert_allclose(m1["grad_norm"], optax.tree.norm(grads), rtol=1e-5)
    assert_trees_close(jax.device_get(s1.meta_params), ref_state.meta_params, rtol=1e-4,
                        atol=1e-6)
    s2, _m2 = mj.jit_outer_step(s1, sin_tasks(jax.random.PRNGKey(4)), **kw)
    assert mj.jit_outer_step._cache_size() == after_first == before + 1  # no recompile
    assert s1.step.is_deleted()  # the state was donated
    assert int(s2.step) == 2


def test_meta_gradient_is_mean_of_task_gradients():
    state, _ = sinusoid_state()
    tasks = sin_tasks(jax.random.PRNGKey(6), num_tasks=3)
    config = mj.MetaConfig(num_inner_steps=2, iterations_per_epoch=1000)
    _, got, _ = jax.jit(functools.partial(mj.meta_gradient, **grad_kwargs(config)))(
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
    assert_trees_close(got, mean_grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("step, epoch", [(0, 0), (9, 0), (10, 1), (37, 3), (99, 9), (100, 10),
                                         (1234, 123)])
def test_outer_step_weights_losses_by_the_epoch_of_its_step(step, epoch):
    """The MSL weights follow ``state.step // iterations_per_epoch`` (not the step)."""
    config = mj.MetaConfig(num_inner_steps=3, msl_epochs=10, iterations_per_epoch=10)
    state, _ = sinusoid_state(num_steps=3)
    state = state._replace(step=jnp.int32(step))
    # One compile for every case: the step is traced, the static arguments are shared.
    _, metrics = mj.jit_outer_step(state, sin_tasks(jax.random.PRNGKey(11)), loss_fn=MLP_LOSS,
                                   optimizer=_SHARED_ADAM, config=config, phase=(False, True))
    w = np.asarray(mj.msl_weights(epoch, 3, 10))
    np.testing.assert_allclose(metrics["loss"], np.sum(w * metrics["per_step_loss"]), rtol=1e-5)
    per_step = np.asarray(metrics["per_step_loss"])
    assert len(set(np.round(per_step, 5))) == 3  # distinct losses: the weighting is visible


def test_train_steps_anneal_msl_weights_across_epochs():
    """Inside one ``train_steps`` call the epoch (and the MSL weights) moves with the step."""
    config = mj.MetaConfig(num_inner_steps=3, msl_epochs=2, iterations_per_epoch=2)
    state, opt = sinusoid_state(num_steps=3)
    sample = lambda key, data: mj.sample_sinusoid_tasks(key, 4, 5, 5)
    _, metrics = mj.train_steps(state, None, sample_tasks=sample, num_steps=6, loss_fn=MLP_LOSS,
                                optimizer=opt, config=config, phase=(False, True))
    for t in range(6):
        w = np.asarray(mj.msl_weights(t // 2, 3, 2))
        np.testing.assert_allclose(metrics["loss"][t], np.sum(w * metrics["per_step_loss"][t]),
                                   rtol=1e-5, err_msg=f"step {t}")


def test_sinusoid_loss_decreases_with_train_steps():
    config = mj.MetaConfig(num_inner_steps=1, msl=False, iterations_per_epoch=1000)
    state, opt = sinusoid_state(num_steps=1, lr=3e-3)
    sample = lambda key, data: mj.sample_sinusoid_tasks(key, 8, 10, 10)
    kw = dict(sample_tasks=sample, num_steps=100, loss_fn=MLP_LOSS, optimizer=opt,
              config=config, phase=(False, False))
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
    state, opt = sinusoid_state(num_steps=1)
    sample = lambda key, data: mj.sample_sinusoid_tasks(key, 4, 5, 5)
    kw = dict(sample_tasks=sample, loss_fn=MLP_LOSS, optimizer=opt, config=config,
              phase=(False, False))
    run = jax.jit(lambda st, k: mj.train_steps(st, None, num_steps=k, **kw), static_argnums=1)
    one_call, _ = run(state, 4)
    two_calls, _ = run(state, 2)
    two_calls, _ = run(two_calls, 2)
    chex.assert_trees_all_equal(one_call, two_calls)


def test_learn_inner_lrs_false_keeps_rates_fixed():
    state, _ = sinusoid_state()
    tasks = sin_tasks(jax.random.PRNGKey(7))
    for learn in (False, True):
        config = mj.MetaConfig(num_inner_steps=2, learn_inner_lrs=learn)
        new, _ = mj.jit_outer_step(jax.tree.map(jnp.copy, state), tasks, loss_fn=MLP_LOSS,
                                   optimizer=_SHARED_ADAM, config=config, phase=(False, True))
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
    state, _ = sinusoid_state()
    (xs, ys), (xq, yq) = sin_tasks(jax.random.PRNGKey(8))
    yq = yq.at[0, 0, 0].set(jnp.nan)
    config = mj.MetaConfig(num_inner_steps=2)  # the step learn_inner_lrs=True compiles
    new, metrics = mj.jit_outer_step(jax.tree.map(jnp.copy, state), ((xs, ys), (xq, yq)),
                                     loss_fn=MLP_LOSS, optimizer=_SHARED_ADAM, config=config,
                                     phase=(False, True))
    assert not bool(metrics["finite"])
    chex.assert_trees_all_equal(state.meta_params, new.meta_params)
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(new.meta_params))
    with pytest.raises(mj.NonFiniteLossError, match=r"non-finite meta loss .* outer step 41"):
        mj.check_finite(jax.device_get(metrics), 41)


def test_mismatched_task_shapes_error_messages():
    state, opt = sinusoid_state()
    (xs, ys), (xq, yq) = sin_tasks(jax.random.PRNGKey(9))
    kw = dict(loss_fn=MLP_LOSS, optimizer=opt, config=mj.MetaConfig(num_inner_steps=2),
              phase=(False, True))
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


# -- per-step indexing with per-step-distinct values ---------------------------------------


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
    # and the Conv4 first-order step against PyTorch in tests/benchmarks/test_torch_maml.py).
    first_order = False
    model, _, meta_params, tasks = conv4_problem()
    config = mj.MetaConfig(num_inner_steps=3, msl_epochs=5, iterations_per_epoch=10)
    loss_fn = mj.make_loss_fn(model, collect_bn_stats=True)
    step = jnp.int32(23)  # epoch 2: MSL weights 0.2 x 2 + 0.6, neither uniform nor one-hot
    weights = mj.msl_weights(2, 3, 5)
    assert len(set(np.round(np.asarray(weights), 6))) == 2
    loss, grads, extras = jax.jit(functools.partial(
        mj.meta_gradient, loss_fn=loss_fn, config=config, phase=(first_order, True)))(
            meta_params, tasks, step=step)
    ref_loss, ref_grads = jax.jit(jax.value_and_grad(
        lambda mp: _loop_meta_loss(model, mp, tasks, weights, first_order)))(meta_params)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
    _assert_conv4_grads_close(grads, ref_grads)
    assert extras["per_step_loss"].shape == (2, 3)


# remat: the full-size meta-gradient with remat against PyTorch float64 is in
# test_meta_full_size.py (variant xla:map:5:1:select).


@pytest.mark.parametrize("msl", [True, False], ids=["msl", "final_step_only"])
def test_running_statistics_follow_the_query_batch_statistics(msl):
    """Slot i moves towards the task-averaged statistics of the query pass after update i:
    every slot under MSL, only the last one with the final-step loss."""
    model, variables, meta_params, tasks = conv4_problem(num_steps=3)
    loss_fn = mj.make_loss_fn(model, collect_bn_stats=True)
    opt = optax.adam(1e-3)
    start_stats = jax.tree.map(lambda a: a + jnp.arange(3.0)[:, None], variables["batch_stats"])
    state = mj.init_meta_state(meta_params["params"], meta_params["inner_lrs"], opt,
                               jax.random.PRNGKey(0), model_state=start_stats)
    config = mj.MetaConfig(num_inner_steps=3, bn_momentum=0.5, msl=msl)
    new, _ = mj.jit_outer_step(jax.tree.map(jnp.copy, state), tasks, loss_fn=loss_fn,
                               optimizer=opt, config=config, phase=(False, msl))

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


def test_unroll_auto_falls_back_to_one_with_remat():
    assert inner_unroll(mj.MetaConfig(num_inner_steps=5, remat=True)) == 1
    assert inner_unroll(mj.MetaConfig(num_inner_steps=3, unroll=2, remat=True)) == 2
    expected = 3 if jax.default_backend() == "cpu" else 1
    assert inner_unroll(mj.MetaConfig(num_inner_steps=3)) == expected
    with pytest.raises(ValueError, match="unroll must be an int, a bool or 'auto'"):
        mj.MetaConfig(unroll="full")


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


# -- learned inner rates (issue 21) -------------------------------------------------------


def _python_loop_meta_loss(params, rates, support, query, num_steps):
    """Meta-SGD written out: num_steps SGD steps with the same per-weight rates."""
    p = params
    for _ in range(num_steps):
        g = jax.grad(tanh_mlp_loss)(p, support, 0)
        p = {k: p[k] - rates[k][0] * g[k] for k in p}
    return tanh_mlp_loss(p, query, 0)


def test_meta_sgd_meta_gradient_matches_a_python_loop_and_finite_differences():
    with jax.enable_x64(True):
        params, rates, support, query = tanh_mlp_problem(jnp.float64)
        config = mj.MetaConfig(num_inner_steps=3, msl=False, learn_inner_lrs=True,
                               task_batching="vmap")
        tasks = jax.tree.map(lambda a: a[None], (support, query))
        # Everything under jit: op by op, each primitive would compile on its own.
        _, grads, _ = jax.jit(functools.partial(
            meta.meta_gradient, loss_fn=tanh_mlp_loss, config=config, phase=(False, False)))(
            {"params": params, "inner_lrs": rates}, tasks, step=0)
        loop = jax.jit(lambda r, p: _python_loop_meta_loss(p, r, support, query, 3))
        want = jax.jit(jax.grad(loop, argnums=(1, 0)))(rates, params)
        for got, ref in ((grads["params"], want[0]), (grads["inner_lrs"], want[1])):
            for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(ref), strict=True):
                np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
        # The loop itself against float64 central differences, in the rates and the weights.
        check_grads(loop, (rates, params), order=1, modes=["rev"], eps=1e-6)


def test_log_rate_update_is_adam_on_log_rates():
    """Independent implementation: optax.adam on rho = log(rate) with d/drho = rate * g."""
    rates = {"a": jnp.array([0.01, 0.2, 1.0]), "b": jnp.array(0.05)}
    params = {"a": jnp.ones(3), "b": jnp.zeros(())}
    opt = mj.make_meta_optimizer(3e-2, inner_lr_update="log", inner_lr_scale=0.5)
    meta_params = {"params": params, "inner_lrs": rates}
    state = opt.init(meta_params)
    rho = jax.tree.map(jnp.log, rates)
    ref_opt = optax.chain(optax.adam(3e-2), optax.scale(0.5))
    ref_state = ref_opt.init(rho)
    for t in range(5):
        g_rates = {"a": jnp.array([1.0, -2.0, 0.5]) * (t + 1), "b": jnp.array(-0.3 + t)}
        grads = {"params": jax.tree.map(jnp.ones_like, params), "inner_lrs": g_rates}
        updates, state = opt.update(grads, state, meta_params)
        meta_params = optax.apply_updates(meta_params, updates)
        g_rho = jax.tree.map(lambda g, r: g * jnp.exp(r), g_rates, rho)
        u, ref_state = ref_opt.update(g_rho, ref_state, rho)
        rho = optax.apply_updates(rho, u)
        for a, b in zip(jax.tree.leaves(meta_params["inner_lrs"]),
                        jax.tree.leaves(jax.tree.map(jnp.exp, rho)), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5)
    assert all(bool(jnp.all(r > 0)) for r in jax.tree.leaves(meta_params["inner_lrs"]))


def test_log_rate_update_skips_masked_rates_and_needs_positive_ones():
    opt = mj.make_meta_optimizer(1e-3, inner_lr_update="log")
    with_none = {"params": {"w": jnp.ones(2), "s": jnp.ones(2)},
                 "inner_lrs": {"w": jnp.array(0.1), "s": None}}
    state = opt.init(with_none)
    grads = jax.tree.map(jnp.ones_like, with_none)
    updates, _ = opt.update(grads, state, with_none)
    assert updates["inner_lrs"]["s"] is None and updates["inner_lrs"]["w"].shape == ()
    with pytest.raises(ValueError, match=r"initial rate must be > 0; inner_lrs\['w'\] has -0.1"):
        opt.init({"params": {"w": jnp.ones(2)}, "inner_lrs": {"w": jnp.array([0.1, -0.1])}})
    with pytest.raises(ValueError, match="needs the meta-parameters"):
        opt.update(grads, state)


@pytest.mark.parametrize("call, message", [
    (lambda: mj.make_meta_optimizer(1e-3, inner_lr_update="softplus"),
     "unknown inner_lr_update 'softplus'"),
    (lambda: mj.rate_update_preset("fast"), "unknown rate update preset 'fast'"),
    (lambda: mj.default_rate_update("per_weight"), "unknown granularity 'per_weight'"),
])
def test_bad_requests_name_the_value(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_presets_and_the_default_of_each_granularity():
    assert mj.rate_update_preset("reference") == {"inner_lr_update": "additive",
                                                  "inner_lr_scale": None}
    assert mj.rate_update_preset("log") == {"inner_lr_update": "log", "inner_lr_scale": 0.1}
    assert mj.rate_update_preset("log_10x") == {"inner_lr_update": "log", "inner_lr_scale": 10.0}
    for granularity, preset in (("scalar", "reference"), ("layer_step", "reference"),
                                ("parameter", "log_10x"), ("meta_sgd", "log_10x")):
        assert mj.default_rate_update(granularity) == preset
        assert mj.rate_update_preset("auto", granularity) == mj.RATE_UPDATE_PRESETS[preset]
    with pytest.raises(ValueError, match="needs the granularity"):
        mj.rate_update_preset("auto")
    # The facade follows the same default: its optimizer moves the rates as the preset's.
    mp = {"params": {"w": jnp.ones(2)}, "inner_lrs": {"w": jnp.array([0.1, 0.2])}}
    grads = {"params": {"w": jnp.array([1.0, -1.0])}, "inner_lrs": {"w": jnp.array([2.0, -3.0])}}
    for granularity, preset in (("meta_sgd", "log_10x"), ("layer_step", "reference")):
        maml = mj.ModelAgnosticMetaLearning(mj.MLP(), lr_granularity=granularity, loss="mse",
                                            outer_lr=1e-2, plus_plus=False)
        ref = mj.make_meta_optimizer(1e-2, **mj.RATE_UPDATE_PRESETS[preset])
        got, _ = maml.optimizer.update(grads, maml.optimizer.init(mp), mp)
        want, _ = ref.update(grads, ref.init(mp), mp)
        np.testing.assert_allclose(got["inner_lrs"]["w"], want["inner_lrs"]["w"], rtol=1e-6)


def _sinusoid_run(rate_update: str, iterations: int, inner_grad_clip=None):
    """Per-parameter per-step rates, 5 inner steps, 5-shot sinusoid, Adam 1e-3 (issue 21's
    reproduction); returns the iterations done, or raises NonFiniteLossError."""
    from experiments import sinusoid
    from experiments.config_lib import sinusoid_config, validate_config
    cfg = validate_config(sinusoid_config(
        name="per-parameter", num_inner_steps=5, lr_granularity="parameter",
        learn_inner_lrs=True, rate_update=rate_update, inner_grad_clip=inner_grad_clip,
        k_shot=5, q_query=5, num_epochs=iterations // 100, iterations_per_epoch=100,
        steps_per_call=100))
    return sinusoid.train_sinusoid(cfg).train_log[-1]["iteration"]


def test_per_parameter_rates_in_log_space_pass_where_the_reference_diverges():
    """Measured (README, "Learned inner rates"; benchmarks/rate_divergence.py): with the
    reference update this run hits a non-finite loss at outer step ~160, as the rates race
    away; updated in log space they move by a bounded factor per step, and the default
    (log space at 10x, inner-gradient clip 100) trains through too."""
    with pytest.raises(mj.NonFiniteLossError):
        _sinusoid_run("reference", 300)
    assert _sinusoid_run("log", 300) == 300
    assert _sinusoid_run("auto", 300, inner_grad_clip="auto") == 300


def _clipped_python_loop_meta_loss(params, rates, support, query, num_steps, clip):
    """Meta-SGD with each inner gradient scaled to global norm <= clip, written out."""
    p = params
    for _ in range(num_steps):
        g = jax.grad(tanh_mlp_loss)(p, support, 0)
        norm = jnp.sqrt(sum(jnp.sum(v ** 2) for v in g.values()))
        scale = jnp.minimum(1.0, clip / norm)
        p = {k: p[k] - rates[k][0] * scale * g[k] for k in p}
    return tanh_mlp_loss(p, query, 0)


def test_clipped_inner_loop_meta_gradient_matches_a_python_loop_and_finite_differences():
    """Second order through the clip's norm: against the loop above and float64 central
    differences, with the clip active (the first inner gradient is over twice the bound)."""
    with jax.enable_x64(True):
        params, rates, support, query = tanh_mlp_problem(jnp.float64)
        clip = 0.3
        g0 = jax.grad(tanh_mlp_loss)(params, support, 0)
        assert float(jnp.sqrt(sum(jnp.sum(v ** 2) for v in g0.values()))) > 2 * clip
        config = mj.MetaConfig(num_inner_steps=3, msl=False, learn_inner_lrs=True,
                               task_batching="vmap", inner_grad_clip=clip)
        tasks = jax.tree.map(lambda a: a[None], (support, query))
        # Everything under jit: op by op, each primitive would compile on its own.
        loss, grads, _ = jax.jit(functools.partial(
            meta.meta_gradient, loss_fn=tanh_mlp_loss, config=config, phase=(False, False)))(
            {"params": params, "inner_lrs": rates}, tasks, step=0)
        loop = jax.jit(lambda r, p: _clipped_python_loop_meta_loss(p, r, support, query, 3,
                                                                   clip))
        np.testing.assert_allclose(loss, loop(rates, params), rtol=1e-12)
        want = jax.jit(jax.grad(loop, argnums=(1, 0)))(rates, params)
        for got, ref in ((grads["params"], want[0]), (grads["inner_lrs"], want[1])):
            for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(ref), strict=True):
                np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
        check_grads(loop, (rates, params), order=1, modes=["rev"], eps=1e-6)
        # Evaluation adapts the same way: its query loss after 3 steps is the same number.
        losses, _ = meta.evaluate_tasks(tanh_mlp_loss, params, rates, tasks, num_steps=3,
                                        inner_grad_clip=clip)
        np.testing.assert_allclose(losses[0, 3], loss, rtol=1e-12)


def test_inner_grad_clip_defaults_and_bad_values():
    for granularity, clip in (("scalar", None), ("layer_step", None),
                              ("parameter", mj.PER_WEIGHT_INNER_GRAD_CLIP),
                              ("meta_sgd", mj.PER_WEIGHT_INNER_GRAD_CLIP)):
        assert mj.default_inner_grad_clip(granularity) == clip
        assert mj.inner_grad_clip_for("auto", granularity) == clip
        maml = mj.ModelAgnosticMetaLearning(mj.MLP(), lr_granularity=granularity, loss="mse")
        assert maml.config.inner_grad_clip == clip
    assert mj.inner_grad_clip_for(None, "meta_sgd") is None
    assert mj.inner_grad_clip_for(3, "layer_step") == 3.0
    for bad in (0, -1.0, "fast", True):
        with pytest.raises(ValueError, match=f"inner_grad_clip .* got {bad!r}"):
            mj.inner_grad_clip_for(bad, "layer_step")
    with pytest.raises(ValueError, match=r"inner_grad_clip .* got -2"):
        mj.MetaConfig(inner_grad_clip=-2)
    with pytest.raises(ValueError, match=r"grad_clip .* got 0"):
        core.adapt(tanh_mlp_loss, {"w": jnp.ones(())}, {"w": 0.1}, None, num_steps=1, grad_clip=0)


# -- the user's arrays, bad values (issue 30) ----------------------------------------------

def _linen_classifier_state():
    """A linen classifier's variables, as a user holds them, and a state built from them."""
    model = mj.Conv4(num_classes=3, num_filters=4, num_steps=1, num_blocks=2)
    variables = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 1)))
    lrs = mj.init_inner_lrs(variables["params"], 1, 0.1, mask=mj.inner_loop_mask(variables))
    key = jax.random.PRNGKey(4)
    state = mj.init_meta_state(variables["params"], lrs, _SHARED_ADAM, key,
                               model_state=variables["batch_stats"])
    return model, variables, lrs, key, state


def _three_way_tasks(num_tasks=2, seed=0):
    rng = np.random.RandomState(seed)
    x = jnp.asarray(rng.rand(num_tasks, 6, 16, 16, 1), jnp.float32)
    y = jnp.tile(jnp.arange(6) % 3, (num_tasks, 1))
    return (x[:, :3], y[:, :3]), (x[:, 3:], y[:, 3:])


def test_training_steps_never_delete_the_callers_arrays():
    """jit_outer_step and jit_train_steps donate the state: the linen variables, rates and
    key it was built from stay usable (init_meta_state copies them), and a jitted model
    call with them gives what it gave before."""
    model, variables, lrs, key, state = _linen_classifier_state()
    x = jnp.ones((2, 16, 16, 1))
    out_before = np.asarray(model.apply(variables, x, mutable=["batch_stats"])[0])
    loss_fn = mj.make_loss_fn(model, collect_bn_stats=True)
    kw = dict(loss_fn=loss_fn, optimizer=_SHARED_ADAM, config=mj.MetaConfig(num_inner_steps=1),
              phase=(False, False))
    state, _ = mj.jit_outer_step(state, _three_way_tasks(), **kw)
    state, _ = mj.jit_train_steps(state, None, num_steps=2,
                                  sample_tasks=lambda k, d: _three_way_tasks(), **kw)
    assert int(state.step) == 3
    for leaf in jax.tree.leaves((variables, lrs, key)):
        assert not leaf.is_deleted()
    np.testing.assert_array_equal(model.apply(variables, x, mutable=["batch_stats"])[0],
                                  out_before)
    # A second state from the same arrays: the copies are the state's own.
    again = mj.init_meta_state(variables["params"], lrs, _SHARED_ADAM, key)
    assert all(not a.is_deleted() for a in jax.tree.leaves(again))


def test_init_meta_state_gives_every_leaf_its_own_buffer():
    """Aliasing inside what the caller passes (one array under two names, an optimizer
    whose state holds the params) would make a donating step give one buffer twice."""
    w = jnp.ones(3)
    opt = optax.chain(optax.adam(1e-3), optax.GradientTransformation(
        lambda params: params, lambda u, s, p=None: (u, s)))   # state = the params
    state = mj.init_meta_state({"a": w, "b": w}, {"a": jnp.float32(0.1), "b": jnp.float32(0.1)},
                               opt, jax.random.PRNGKey(0))
    pointers = [x.unsafe_buffer_pointer() for x in jax.tree.leaves(state)]
    assert len(set(pointers)) == len(pointers)
    assert w.unsafe_buffer_pointer() not in pointers
    state, _ = mj.jit_outer_step(state, sin_tasks(jax.random.PRNGKey(0)),
                                 loss_fn=lambda p, b, s: jnp.mean((b[0] * p["a"][0] +
                                                                   p["b"][1] - b[1]) ** 2),
                                 optimizer=opt, config=mj.MetaConfig(num_inner_steps=1),
                                 phase=(False, False))
    assert not w.is_deleted()


@pytest.mark.parametrize("where, label, count", [("support", 7, 1), ("query", -1, 1),
                                                 ("query", 7, 2)])
def test_labels_outside_the_classes_skip_the_step_and_are_named(where, label, count):
    """Inside JAX a label 7 with 3 classes is a NaN loss, a -1 a finite but wrong one, and a
    support label a finite one: each is caught on the device, the step skipped (the state
    as before but for its step count) and check_finite names it."""
    model, _, _, _, state = _linen_classifier_state()
    (xs, ys), (xq, yq) = _three_way_tasks()
    if where == "support":
        ys = ys.at[1, 0].set(label)
    else:
        yq = yq.at[0, :count].set(label)
    kw = dict(loss_fn=mj.make_loss_fn(model, collect_bn_stats=True), optimizer=_SHARED_ADAM,
              config=mj.MetaConfig(num_inner_steps=1), phase=(False, True))
    new, metrics = mj.outer_step(state, ((xs, ys), (xq, yq)), **kw)
    assert int(metrics[f"{where}_label_errors"]) == count
    other = "query" if where == "support" else "support"
    assert int(metrics[f"{other}_label_errors"]) == 0
    assert int(new.step) == 1
    chex.assert_trees_all_equal((new.meta_params, new.opt_state, new.model_state),
                                (state.meta_params, state.opt_state, state.model_state))
    with pytest.raises(mj.InvalidLabelsError,
                       match=f"outer step 7: {where} labels outside the model's classes "
                             f"\\({count} of them"):
        mj.check_finite(jax.device_get(metrics), 7)
    # Clean labels: the step is taken and nothing is reported.
    good, metrics = mj.outer_step(state, _three_way_tasks(), **kw)
    assert int(metrics["support_label_errors"]) == int(metrics["query_label_errors"]) == 0
    mj.check_finite(jax.device_get(metrics), 0)
    assert not np.array_equal(good.meta_params["params"]["head"]["kernel"],
                              state.meta_params["params"]["head"]["kernel"])


def test_labels_drawn_on_the_device_are_checked_in_the_training_loop():
    """Tasks sampled inside jit_train_steps: the bad step is skipped, the others taken, and
    check_finite names the step."""
    model, _, _, _, state = _linen_classifier_state()

    def sample(key, data):
        (xs, ys), (xq, yq) = _three_way_tasks()
        step = jax.random.randint(key, (), 0, 1) + data   # a traced value
        return (xs, ys), (xq, jnp.where(step == 0, yq + 3, yq))

    kw = dict(loss_fn=mj.make_loss_fn(model, collect_bn_stats=True), optimizer=_SHARED_ADAM,
              config=mj.MetaConfig(num_inner_steps=1), phase=(False, False))
    _, metrics = mj.jit_train_steps(state, jnp.int32(0), sample_tasks=sample, num_steps=2, **kw)
    np.testing.assert_array_equal(metrics["query_label_errors"], [6, 6])
    with pytest.raises(mj.InvalidLabelsError, match=r"outer step 40: query labels .*\(6 of"):
        mj.check_finite(jax.device_get(metrics), 40)


def test_the_label_check_costs_no_forward_pass():
    """The support labels are checked through a loss call whose forward pass XLA drops:
    the compiled step has the FLOPs of one without the check, to a few label comparisons."""
    model, _, _, _, state = _linen_classifier_state()
    loss_fn = mj.make_loss_fn(model, collect_bn_stats=True)

    def unchecked(p, batch, step):
        value, aux = loss_fn(p, batch, step)
        return value, {k: v for k, v in aux.items() if k != "label_errors"}

    def flops(fn):
        compiled = jax.jit(mj.outer_step, static_argnames=mj.OUTER_STEP_STATIC).lower(
            state, _three_way_tasks(), loss_fn=fn, optimizer=_SHARED_ADAM,
            config=mj.MetaConfig(num_inner_steps=1), phase=(False, True)).compile()
        cost = compiled.cost_analysis()
        return (cost[0] if isinstance(cost, list) else cost)["flops"]

    with_check, without = flops(loss_fn), flops(unchecked)
    assert without > 1e6
    assert 0 <= with_check - without < 1e-4 * without


def test_empty_task_batches_are_named():
    state, opt = sinusoid_state()
    (xs, ys), (xq, yq) = sin_tasks(jax.random.PRNGKey(9))
    kw = dict(loss_fn=MLP_LOSS, optimizer=opt, config=mj.MetaConfig(num_inner_steps=2),
              phase=(False, True))
    with pytest.raises(ValueError, match="holds no tasks"):
        mj.outer_step(state, ((xs[:0], ys[:0]), (xq[:0], yq[:0])), **kw)
    with pytest.raises(ValueError, match="the support set of every task is empty"):
        mj.outer_step(state, ((xs[:, :0], ys[:, :0]), (xq, yq)), **kw)
    with pytest.raises(ValueError, match="the query set of every task is empty"):
        mj.jit_evaluate_tasks(MLP_LOSS, state.meta_params["params"],
                              state.meta_params["inner_lrs"], ((xs, ys), (xq[:, :0], yq[:, :0])),
                              num_steps=2)


@pytest.mark.parametrize("call, message", [
    (lambda: mj.make_outer_loop(meta_lr=-1e-3), r"meta_lr \(the meta learning rate\) must be a "
                                                r"finite number > 0, got -0.001"),
    (lambda: mj.make_outer_loop(meta_lr=0.0), "must be a finite number > 0, got 0.0"),
    (lambda: mj.make_meta_optimizer(float("nan")), "meta learning rate must be a finite"),
    (lambda: mj.meta_lr_schedule(1e-3, -1e-5, 10, 5), r"final meta learning rate"),
    (lambda: mj.make_meta_optimizer(1e-3, inner_lr_scale=0.0), "inner_lr_scale must be"),
])
def test_bad_learning_rates_are_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_rates_for_other_step_counts_need_extending_everywhere():
    """One behaviour: adapt, task_loss and evaluate_tasks all refuse rates of 2 steps for 10
    steps, naming extend_inner_lrs; with it, evaluate_tasks repeats the last step's rates."""
    state, _ = sinusoid_state(num_steps=2)
    params, lrs = state.meta_params["params"], state.meta_params["inner_lrs"]
    tasks = sin_tasks(jax.random.PRNGKey(2))
    message = r"has 2 steps but num_steps=10; .* extend_inner_lrs\(inner_lrs, 10\)"
    with pytest.raises(ValueError, match=message):
        mj.adapt(MLP_LOSS, params, lrs, jax.tree.map(lambda a: a[0], tasks[0]), num_steps=10)
    with pytest.raises(ValueError, match=message):
        mj.evaluate_tasks(MLP_LOSS, params, lrs, tasks, num_steps=10)
    losses, _ = mj.evaluate_tasks(MLP_LOSS, params, mj.extend_inner_lrs(lrs, 10), tasks,
                                  num_steps=10)
    assert losses.shape == (4, 11)


# -- first order: the closed form against differentiating the stopped inner loop ---------


def _stopped_loop_meta_gradient(meta_params, tasks, loss_fn, config, msl, step=0):
    """First-order MAML as it was computed before the closed form: reverse mode through
    the inner loop with its gradients stopped (core.task_loss(first_order=True))."""
    n = config.num_inner_steps
    weights = (mj.msl_weights(step // config.iterations_per_epoch, n, config.msl_epochs)
               if msl else mj.final_step_weights(n))

    def mean_loss(mp):
        lrs = mp["inner_lrs"] if config.learn_inner_lrs else jax.lax.stop_gradient(
            mp["inner_lrs"])
        per_task = jax.vmap(lambda s, q: mj.task_loss(
            loss_fn, mp["params"], lrs, s, q, num_steps=n, step_weights=weights,
            first_order=True, grad_clip=config.inner_grad_clip)[0])
        return jnp.mean(per_task(*tasks))

    return jax.value_and_grad(mean_loss)(meta_params)


@pytest.mark.parametrize("granularity, msl, clip, learn", [
    ("layer_step", True, None, True), ("layer_step", False, None, True),
    ("scalar", True, 0.5, True), ("parameter", True, None, True),
    ("meta_sgd", False, 0.5, True), ("layer_step", True, None, False)])
def test_first_order_closed_form_equals_the_stopped_inner_loop(granularity, msl, clip, learn):
    """float64, a tanh MLP whose rates differ per step (or weight): the closed form of the
    first-order meta-gradient (parameters, rates of every granularity, MSL or final
    step, inner-gradient clip, fixed rates) equals reverse mode through the loop."""
    with jax.enable_x64(True):
        params, _, support, query = tanh_mlp_problem(jnp.float64)
        n = 3
        rates = mj.init_inner_lrs(params, n, 0.1, granularity)
        rates = jax.tree.map(lambda r: r * (1.0 + 0.3 * jnp.cos(jnp.arange(r.size).reshape(
            r.shape))), rates)
        tasks = jax.tree.map(lambda a: jnp.stack([a, 0.9 * a + 0.1]), (support, query))
        config = mj.MetaConfig(num_inner_steps=n, msl=msl, msl_epochs=5,
                               iterations_per_epoch=2, inner_grad_clip=clip,
                               learn_inner_lrs=learn)
        meta_params = {"params": params, "inner_lrs": rates}
        loss, grads, extras = jax.jit(functools.partial(
            mj.meta_gradient, loss_fn=tanh_mlp_loss, config=config, phase=(True, msl)))(
            meta_params, tasks, step=3)
        want_loss, want = _stopped_loop_meta_gradient(meta_params, tasks, tanh_mlp_loss,
                                                      config, msl, step=3)
        assert float(loss) == pytest.approx(float(want_loss), rel=1e-12)
        chex.assert_trees_all_close(grads, want, rtol=1e-10, atol=1e-13)
        assert extras["per_step_loss"].shape == (2, n)


def test_first_order_closed_form_on_a_conv4_with_per_step_batch_norm():
    """The Conv4 of the second-order tests (rates and BN weights different at every step):
    closed form = reverse mode through the stopped loop, float32."""
    model, _, meta_params, tasks = conv4_problem()
    loss_fn = mj.make_loss_fn(model, collect_bn_stats=True)
    config = mj.MetaConfig(num_inner_steps=3)
    for msl in (True, False):
        loss, grads, extras = jax.jit(functools.partial(
            mj.meta_gradient, loss_fn=loss_fn, config=config, phase=(True, msl)))(
            meta_params, tasks, step=0)
        want_loss, want = _stopped_loop_meta_gradient(meta_params, tasks, loss_fn, config, msl)
        np.testing.assert_allclose(loss, want_loss, rtol=1e-6)
        chex.assert_trees_all_close(grads, want, rtol=2e-4, atol=2e-6)
        bn_leaf = jax.tree.leaves(extras["bn_stats"])[0]
        assert bn_leaf.shape[:-1] == ((2, 3) if msl else (2,)) and bool(extras[
            "bn_stats_every_step"]) == msl
