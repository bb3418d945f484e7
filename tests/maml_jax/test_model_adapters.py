"""maml_jax.model_adapters, models of your own: NNX, linen and plain-function adapters give
the same meta-gradient; the inner-loop mask (batch norm left out; ANIL's head only)."""

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
from maml_jax import core
from tests.support.tiny_nets import LinenNet, NnxNet, classification_tasks

STEPS = 1
LINEN_NAMES = {"lin": "Dense_0", "bn": "BatchNorm_0", "head": "Dense_1"}


def _to_linen(tree):
    return {LINEN_NAMES[k]: v for k, v in tree.items()}


def _apply_twin(params, x):
    """An independent, hand-written statement of the same network (batch statistics)."""
    h = x @ params["lin"]["kernel"] + params["lin"]["bias"]
    mean, var = h.mean(0), h.var(0)
    h = (h - mean) / jnp.sqrt(var + 1e-5) * params["bn"]["scale"] + params["bn"]["bias"]
    return jax.nn.relu(h) @ params["head"]["kernel"] + params["head"]["bias"]


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
                                   phase=(False, True)))
    return fn({"params": params, "inner_lrs": lrs}, tasks, step=jnp.int32(0))


def test_nnx_linen_and_apply_models_give_the_same_meta_gradient(nnx_parts):
    tasks = classification_tasks()
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
    l_loss, l_grads, _ = _meta_gradient(mj.make_loss_fn(LinenNet()), linen_params,
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
    state = mj.init_meta_state(nnx_parts.params, lrs, opt, jax.random.PRNGKey(0),
                               model_state=nnx_parts.model_state)
    tasks = classification_tasks(seed=2)
    new, metrics = mj.jit_outer_step(state, tasks, loss_fn=nnx_parts.loss_fn, optimizer=opt,
                                     config=mj.MetaConfig(num_inner_steps=1, bn_momentum=1.0),
                                     phase=(False, False))
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


def test_the_users_nnx_module_survives_meta_training():
    """The docs' "your own model" path: nnx_model(module), then init_meta_state(parts.params)
    and a donating jit_outer_step. The module (whose arrays parts.params holds) still runs,
    unchanged, and parts.params stays readable."""
    module = NnxNet(nnx.Rngs(3))
    x = jnp.ones((4, 3))
    before = np.asarray(module(x))
    parts = mj.nnx_model(module)
    opt = optax.adam(1e-2)
    lrs = mj.init_inner_lrs(parts.params, 1, 0.1, mask=parts.inner_loop_mask)
    state = mj.init_meta_state(parts.params, lrs, opt, jax.random.PRNGKey(0),
                               model_state=parts.model_state)
    for _ in range(2):
        state, metrics = mj.jit_outer_step(state, classification_tasks(seed=2),
                                           loss_fn=parts.loss_fn, optimizer=opt,
                                           config=mj.MetaConfig(num_inner_steps=1),
                                           phase=(False, False))
    assert bool(metrics["finite"])
    np.testing.assert_array_equal(module(x), before)
    assert all(not a.is_deleted() for a in jax.tree.leaves((parts.params, parts.model_state)))
    assert not np.array_equal(state.meta_params["params"]["head"]["kernel"],
                              parts.params["head"]["kernel"])


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


def test_anil_adapts_the_head_alone():
    """One inner SGD step with the ANIL mask: the body is untouched, the head takes the
    closed-form step ``head - rate * d loss / d head``."""
    model = mj.MLP(hidden=(5,))
    params = model.init(jax.random.PRNGKey(1), jnp.zeros((1, 1)))["params"]
    mask = mj.inner_loop_mask(params, only="head")
    assert jax.tree.map(bool, mask) == {"dense0": {"kernel": False, "bias": False},
                                        "head": {"kernel": True, "bias": True}}
    lrs = core.init_inner_lrs(params, 1, 0.3, "scalar", mask=mask)
    loss_fn = mj.make_loss_fn(model, "mse")
    x = jnp.linspace(-1, 1, 8)[:, None]
    support = (x, jnp.sin(3 * x))
    adapted = core.adapt(loss_fn, params, lrs, support, num_steps=1)
    np.testing.assert_array_equal(adapted["dense0"]["kernel"], params["dense0"]["kernel"])
    g = jax.grad(lambda p: core.split_loss_output(loss_fn(p, support, 0))[0])(params)
    for name in ("kernel", "bias"):
        np.testing.assert_allclose(adapted["head"][name],
                                   params["head"][name] - 0.3 * g["head"][name], rtol=1e-6)


@pytest.mark.parametrize("call, message", [
    (lambda: mj.inner_loop_mask({"body": {"w": 1}, "out": {"w": 1}}, only="head"),
     r"no top-level module 'head'; they have \['body', 'out'\]"),
    (lambda: mj.inner_loop_mask({"body": {"w": 1}, "out": {"w": 1}}, freeze="head"),
     r"freeze='head'\): the params have no top-level module 'head'"),
    (lambda: mj.inner_loop_mask({"head": {"w": 1}}, only="head", freeze="head"),
     r"only= \(ANIL\) or freeze= \(BOIL\), not both"),
])
def test_bad_requests_name_the_value(call, message):
    with pytest.raises(ValueError, match=message):
        call()


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
