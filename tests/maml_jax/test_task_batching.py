"""maml_jax.task_batching: vmap and lax.map give the same meta-gradient; "auto" resolves to
map for convolutions on CPU (except Conv4's matmul convolutions)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import maml_jax as mj
from tests.support.problems import (
    assert_trees_close,
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
