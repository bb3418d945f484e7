"""Models of your own: NNX, linen and plain-function adapters; the loss contract; labels."""

import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import maml_jax as mj
from maml_jax import meta

WAYS, STEPS = 2, 1


class NnxNet(nnx.Module):
    """Dense -> BatchNorm -> relu -> Dense, tiny."""

    def __init__(self, rngs):
        self.lin = nnx.Linear(3, 4, rngs=rngs)
        self.bn = nnx.BatchNorm(4, rngs=rngs)
        self.head = nnx.Linear(4, WAYS, rngs=rngs)

    def __call__(self, x):
        return self.head(nnx.relu(self.bn(self.lin(x))))


class LinenNet(nn.Module):
    """The linen twin of ``NnxNet`` (a standard ``nn.BatchNorm``)."""

    @nn.compact
    def __call__(self, x):
        x = nn.Dense(4)(x)
        x = nn.BatchNorm(use_running_average=False, epsilon=1e-5)(x)
        return nn.Dense(WAYS)(nn.relu(x))


LINEN_NAMES = {"lin": "Dense_0", "bn": "BatchNorm_0", "head": "Dense_1"}


def _to_linen(tree):
    return {LINEN_NAMES[k]: v for k, v in tree.items()}


def _apply_twin(params, x):
    """An independent, hand-written statement of the same network (batch statistics)."""
    h = x @ params["lin"]["kernel"] + params["lin"]["bias"]
    mean, var = h.mean(0), h.var(0)
    h = (h - mean) / jnp.sqrt(var + 1e-5) * params["bn"]["scale"] + params["bn"]["bias"]
    return jax.nn.relu(h) @ params["head"]["kernel"] + params["head"]["bias"]


def _tasks(num_tasks=2, seed=0):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=(num_tasks, 8, 3)), jnp.float32)
    y = jnp.asarray(np.tile(np.arange(4) % WAYS, (num_tasks, 2)))
    return (x[:, :4], y[:, :4]), (x[:, 4:], y[:, 4:])


@pytest.fixture(scope="module")
def nnx_parts():
    return mj.nnx_model(NnxNet(nnx.Rngs(0)))


def _distinct_lrs(params, mask):
    rng = np.random.default_rng(1)
    lrs = mj.init_inner_lrs(params, STEPS, 0.1, mask=mask)
    return jax.tree.map(lambda a: jnp.asarray(rng.uniform(0.05, 0.3, a.shape), jnp.float32),
                        lrs)


def _meta_gradient(loss_fn, params, lrs, tasks):
    config = mj.MetaConfig(num_inner_steps=STEPS, iterations_per_epoch=10)
    fn = jax.jit(functools.partial(mj.meta_gradient, loss_fn=loss_fn, config=config,
                                   first_order=False, msl=True))
    return fn({"params": params, "inner_lrs": lrs}, tasks, step=jnp.int32(0))


def test_nnx_linen_and_apply_models_give_the_same_meta_gradient(nnx_parts):
    tasks = _tasks()
    assert nnx_parts.inner_loop_mask == {"bn": {"bias": False, "scale": False},
                                         "head": {"bias": True, "kernel": True},
                                         "lin": {"bias": True, "kernel": True}}
    lrs = _distinct_lrs(nnx_parts.params, nnx_parts.inner_loop_mask)
    loss, grads, extras = _meta_gradient(nnx_parts.loss_fn, nnx_parts.params, lrs, tasks)
    assert max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grads)) > 1e-3

    linen_params = _to_linen(nnx_parts.params)
    variables = LinenNet().init(jax.random.PRNGKey(0), jnp.zeros((1, 3)))
    linen_mask = mj.inner_loop_mask(linen_params, variables["batch_stats"])
    assert linen_mask == _to_linen(nnx_parts.inner_loop_mask)
    l_loss, l_grads, _ = _meta_gradient(mj.linen_loss_fn(LinenNet()), linen_params,
                                        _to_linen(lrs), tasks)
    chex.assert_trees_all_close(l_loss, loss, rtol=1e-5)
    chex.assert_trees_all_close(l_grads, jax.tree.map(_to_linen, grads,
                                                      is_leaf=lambda t: "lin" in t),
                                rtol=1e-4, atol=1e-6)

    a_loss, a_grads, _ = _meta_gradient(mj.apply_loss_fn(_apply_twin), nnx_parts.params,
                                        lrs, tasks)
    chex.assert_trees_all_close(a_loss, loss, rtol=1e-5)
    chex.assert_trees_all_close(a_grads, grads, rtol=1e-4, atol=1e-6)
    # The NNX model reports its query passes' batch statistics: (tasks, steps, C).
    assert extras["bn_stats"]["bn"]["mean"].shape == (2, STEPS, 4)


def test_nnx_batch_norm_model_trains_through_jit_outer_step(nnx_parts):
    opt = optax.adam(1e-2)
    lrs = mj.init_inner_lrs(nnx_parts.params, 1, 0.1, mask=nnx_parts.inner_loop_mask)
    # Copies: jit_outer_step donates (deletes) the state's arrays.
    state = mj.init_meta_state(*jax.tree.map(jnp.copy, (nnx_parts.params, lrs)), opt,
                               jax.random.PRNGKey(0),
                               model_state=jax.tree.map(jnp.copy, nnx_parts.model_state))
    tasks = _tasks(seed=2)
    new, metrics = mj.jit_outer_step(state, tasks, loss_fn=nnx_parts.loss_fn, optimizer=opt,
                                     config=mj.MetaConfig(num_inner_steps=1, bn_momentum=1.0),
                                     first_order=False, msl=False)
    assert bool(metrics["finite"]) and 0 <= float(metrics["accuracy"]) <= 1
    # Momentum 1: the running mean is the task-averaged query batch mean after the step.
    (xs, ys), (xq, _) = tasks
    params = nnx_parts.params
    want = []
    for t in range(2):
        adapted = mj.adapt(nnx_parts.loss_fn, params, lrs, (xs[t], ys[t]), num_steps=1)
        h = xq[t] @ adapted["lin"]["kernel"] + adapted["lin"]["bias"]
        want.append(h.mean(0))
    np.testing.assert_allclose(new.model_state["bn"]["mean"], np.mean(want, 0), rtol=1e-4,
                               atol=1e-6)


@pytest.fixture(scope="module")
def linen_facade():
    maml = mj.ModelAgnosticMetaLearning(LinenNet(), inner_lr=0.1, inner_steps=1)
    (xs, ys), (xq, yq) = _tasks(seed=3)
    maml.init(xs[0])
    before = jax.tree.map(np.asarray, maml.state.model_state)
    loss = maml.meta_train_step(xs, ys, xq, yq)
    return maml, before, loss


def test_facade_with_standard_batch_norm(linen_facade):
    maml, before, loss = linen_facade
    assert np.isfinite(loss)
    assert maml.inner_lrs["BatchNorm_0"]["scale"] is None  # not adapted in the inner loop
    assert maml.inner_lrs["Dense_0"]["kernel"].shape == (1,)
    # nn.BatchNorm reports no statistics: its running statistics keep their values.
    chex.assert_trees_all_equal(jax.device_get(maml.state.model_state), before)


def test_facade_adapt_with_a_task_axis_adapts_each_task(linen_facade):
    maml, _, _ = linen_facade
    (xs, ys), _ = _tasks(seed=4)
    batched = maml.adapt(xs, ys)
    one = maml.adapt(xs[1], ys[1])
    chex.assert_trees_all_close(jax.tree.map(lambda a: a[1], batched), one, rtol=1e-5)
    with pytest.raises(ValueError, match="neither one task"):
        maml.adapt(xs[None], ys[None])


def test_facade_label_errors(linen_facade):
    maml, _, _ = linen_facade
    (xs, ys), (xq, yq) = _tasks(seed=5)
    with pytest.raises(ValueError, match=r"query labels must lie in \[0, 2\)"):
        maml.meta_train_step(xs, ys, xq, yq + 2)
    with pytest.raises(TypeError, match="support labels must be integer class indices"):
        maml.evaluate(xs, ys.astype(np.float32), xq, yq)


# -- the loss contract and trace-time checks (no compiles) --------------------------------

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


def test_label_checks_at_trace_time():
    logits = jax.ShapeDtypeStruct((4, 3), jnp.float32)
    check = lambda y: jax.eval_shape(
        lambda o, labels: mj.prediction_loss(o, labels, "cross_entropy"), logits, y)
    check(jax.ShapeDtypeStruct((4,), jnp.int32))
    with pytest.raises(TypeError, match="one-hot labels"):
        check(jax.ShapeDtypeStruct((4, 3), jnp.float32))
    with pytest.raises(ValueError, match=r"labels must have shape \(4,\)"):
        check(jax.ShapeDtypeStruct((4, 1), jnp.int32))
    with pytest.raises(ValueError, match="mse targets must have the model outputs' shape"):
        jax.eval_shape(lambda o, labels: mj.prediction_loss(o, labels, "mse"),
                       jax.ShapeDtypeStruct((4, 1), jnp.float32),
                       jax.ShapeDtypeStruct((4,), jnp.float32))
    mj.check_labels(np.array([0, 2]), 3)
    with pytest.raises(ValueError, match=r"must lie in \[0, 3\)"):
        mj.check_labels(np.array([0, 3]), 3)


def test_wrong_mask_structure_names_the_path():
    params = {"a": {"kernel": jnp.zeros(2), "bias": jnp.zeros(2)}, "b": jnp.zeros(1)}
    with pytest.raises(ValueError, match="params has 'a/kernel' which mask lacks"):
        mj.init_inner_lrs(params, 1, 0.1, mask={"a": {"bias": True}, "b": True})


def test_auto_task_batching_maps_convolutions_on_cpu():
    class ConvNet(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(2)(nn.Conv(2, (3, 3))(x).reshape(x.shape[0], -1))

    batch = (jnp.zeros((2, 6, 6, 1)), jnp.zeros((2,), jnp.int32))
    config = mj.MetaConfig()
    conv_params = jax.eval_shape(ConvNet().init, jax.random.PRNGKey(0), batch[0])["params"]
    conv4 = mj.Conv4(num_classes=2, num_filters=2, num_blocks=1)
    conv4_params = jax.eval_shape(conv4.init, jax.random.PRNGKey(0), batch[0])["params"]
    on_cpu = jax.default_backend() == "cpu"
    assert meta._batching(config, mj.make_loss_fn(ConvNet()), conv_params, batch) == \
        ("map" if on_cpu else "vmap")
    # Conv4 writes its convolutions as matmuls on CPU: vmap stays the fastest there.
    assert meta._batching(config, mj.make_loss_fn(conv4), conv4_params, batch) == "vmap"
    assert meta._batching(mj.MetaConfig(task_batching="vmap"), mj.make_loss_fn(ConvNet()),
                          conv_params, batch) == "vmap"


class ApplyLossFnTest(chex.TestCase):
    """The same numbers with and without jit (chex variants)."""

    @chex.variants(with_jit=True, without_jit=True)
    def test_apply_loss_fn_matches_closed_form(self):
        loss_fn = mj.apply_loss_fn(lambda p, x: x @ p["w"], "mse")
        x = jnp.array([[1.0, 2.0], [3.0, 4.0]])
        y = jnp.array([1.0, 0.0])
        value, aux = self.variant(loss_fn)({"w": jnp.array([0.5, -0.5])}, (x, y), 0)
        np.testing.assert_allclose(value, ((-0.5 - 1.0) ** 2 + (-0.5) ** 2) / 2, rtol=1e-6)
        assert aux == {}
