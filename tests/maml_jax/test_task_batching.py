"""maml_jax.task_batching: vmap and lax.map give the same meta-gradient; "auto" resolves to
map for convolutions on CPU (except Conv4's matmul convolutions); task groups change no
value."""

import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import maml_jax as mj
from tests.support.problems import (
    assert_trees_close,
    conv4_problem,
    grad_kwargs,
    sin_tasks,
    sinusoid_state,
)


def test_vmap_and_map_task_batching_agree():
    state, _ = sinusoid_state()
    tasks = sin_tasks(jax.random.PRNGKey(5))
    out = {}
    for b in ("vmap", "map"):
        config = mj.MetaConfig(num_inner_steps=2, task_batching=b)
        out[b] = mj.meta_gradient(state.meta_params, tasks, step=state.step,
                                  **grad_kwargs(config))
    np.testing.assert_allclose(out["vmap"][0], out["map"][0], rtol=1e-6)
    assert_trees_close(out["vmap"][1], out["map"][1])
    assert_trees_close(out["vmap"][2]["per_step_loss"], out["map"][2]["per_step_loss"])


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

    def resolve(config, loss_fn, params, batch):
        return mj.task_batching.resolve_task_batching(config.task_batching, loss_fn, params,
                                                      batch)

    assert resolve(config, mj.make_loss_fn(ConvNet()), conv_params, batch) == \
        ("map" if on_cpu else "vmap")
    # Conv4 writes its convolutions as matmuls on CPU: vmap stays the fastest there.
    assert resolve(config, mj.make_loss_fn(conv4), conv4_params, batch) == "vmap"
    assert resolve(mj.MetaConfig(task_batching="vmap"), mj.make_loss_fn(ConvNet()),
                   conv_params, batch) == "vmap"


# ---------------------------------------------------------------------------- task groups
def _per_task(x, s):
    """Outputs of several kinds per task: a scalar, a vector, a nested dict."""
    return jnp.sum(x * s), {"v": x[::-1] + s, "n": (x * 2, jnp.max(x))}


@pytest.mark.parametrize("batching", ["vmap", "map"])
@pytest.mark.parametrize("groups", [1, 2, 3, 5, 8])
def test_task_groups_give_every_task_its_own_result_in_order(batching, groups):
    """Split into groups (uneven, one task each, more groups than tasks), the results are
    the ungrouped ones, in task order: each task's output depends on that task alone."""
    xs = jnp.arange(15.0).reshape(5, 3) ** 1.5
    ss = jnp.arange(5.0) - 2
    want = jax.vmap(_per_task)(xs, ss)
    got = mj.task_batching.map_over_tasks(_per_task, batching, None, xs, ss, groups=groups)
    chex.assert_trees_all_close(got, want, rtol=1e-6)


def test_task_groups_are_ignored_on_a_task_sharding():
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("tasks",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("tasks"))
    xs = jnp.arange(12.0).reshape(4, 3)
    ss = jnp.arange(4.0)
    got = jax.jit(lambda x, s: mj.task_batching.map_over_tasks(
        _per_task, "vmap", sharding, x, s, groups=2))(xs, ss)
    chex.assert_trees_all_close(got, jax.vmap(_per_task)(xs, ss), rtol=1e-6)


@pytest.mark.parametrize("algorithm,first_order", [
    (mj.algorithms.MAML(), False), (mj.algorithms.MAML(), True),
    (mj.algorithms.Reptile(), False)])
def test_task_groups_give_the_same_meta_gradient(algorithm, first_order):
    """Five tasks in two uneven groups (2 + 3): the meta-gradient, its loss and every
    per-task output are the ungrouped step's."""
    state, _ = sinusoid_state()
    tasks = sin_tasks(jax.random.PRNGKey(7), num_tasks=5)
    out = {}
    for groups in (1, 2):
        config = mj.MetaConfig(num_inner_steps=2, task_groups=groups, algorithm=algorithm)
        grad_fn = jax.jit(functools.partial(mj.meta_gradient,
                                            **grad_kwargs(config, first_order=first_order)))
        out[groups] = grad_fn(state.meta_params, tasks, step=state.step)
    np.testing.assert_allclose(out[1][0], out[2][0], rtol=1e-6)
    assert_trees_close(out[1][1], out[2][1])
    assert_trees_close(out[1][2]["per_step_loss"], out[2][2]["per_step_loss"])
    assert out[2][2]["per_step_loss"].shape[0] == 5


def test_task_groups_conv4_step_under_jit():
    """The Conv4 outer step with batch-norm statistics in two groups: the ungrouped step's
    state (parameters, rates, BN running statistics), compiled once for two calls."""
    model, variables, meta_params, tasks = conv4_problem(num_tasks=3)
    loss_fn = mj.make_loss_fn(model, collect_bn_stats=True)
    # SGD, not Adam: Adam's first step is lr * sign(g), and a conv bias before batch norm
    # has a gradient of rounding noise (zero in exact arithmetic).
    opt = optax.sgd(0.01)
    states = {}
    for groups in (1, 2):
        config = mj.MetaConfig(num_inner_steps=3, task_groups=groups)
        state = mj.init_meta_state(meta_params["params"], meta_params["inner_lrs"], opt,
                                   jax.random.PRNGKey(0), variables["batch_stats"])
        kw = dict(loss_fn=loss_fn, optimizer=opt, config=config, phase=(False, True))
        state, _ = mj.jit_outer_step(state, tasks, **kw)
        compiled = mj.jit_outer_step._cache_size()
        state, _ = mj.jit_outer_step(state, tasks, **kw)
        assert mj.jit_outer_step._cache_size() == compiled   # no recompile
        states[groups] = state
    # float32: the project's float32 tolerance (rounding differs between the batchings)
    assert_trees_close(states[1], states[2], rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_bad_task_groups_are_named(bad):
    with pytest.raises(ValueError, match="task_groups must be an int >= 1"):
        mj.MetaConfig(task_groups=bad)
    with pytest.raises(ValueError, match="task_groups must be an int >= 1"):
        mj.make_outer_loop(task_groups=bad)
