"""Small meta-learning problems shared by the library's tests (``tests/maml_jax/``).

A sinusoid MLP state and its tasks (``test_meta``, ``test_task_batching``), a small Conv4
whose rates and BN weights differ at every inner step (``test_meta``, ``test_models``),
and a tanh MLP regression for the learned-rate tests (``test_core``, ``test_meta``).
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

import maml_jax as mj

MLP_LOSS = mj.make_loss_fn(mj.MLP(hidden=(16, 16)), "mse")


def sinusoid_state(num_steps=2, granularity="layer_step", seed=0, lr=1e-3):
    params = mj.MLP(hidden=(16, 16)).init(jax.random.PRNGKey(seed), jnp.zeros((1, 1)))["params"]
    lrs = mj.init_inner_lrs(params, num_steps, 0.01, granularity)
    opt = optax.adam(lr)
    return mj.init_meta_state(params, lrs, opt, jax.random.PRNGKey(seed + 1)), opt


def sin_tasks(key, data=None, num_tasks=4):
    return mj.sample_sinusoid_tasks(key, num_tasks, 10, 10)


def grad_kwargs(config, first_order=False, msl=True, loss_fn=MLP_LOSS):
    return dict(loss_fn=loss_fn, config=config, phase=(first_order, msl))


def assert_trees_close(a, b, rtol=1e-5, atol=1e-7):
    chex.assert_trees_all_close(a, b, rtol=rtol, atol=atol)  # structure, then values


def conv4_problem(num_filters=4, num_steps=3, num_tasks=2, ways=3, seed=0, blocks=2,
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


def tanh_mlp_loss(params, batch, step):
    del step
    x, y = batch
    h = jnp.tanh(x @ params["w1"] + params["b1"])
    return jnp.mean((h @ params["w2"] - y) ** 2)


def tanh_mlp_problem(dtype=jnp.float32):
    k = jax.random.split(jax.random.PRNGKey(0), 6)
    params = {"w1": jax.random.normal(k[0], (3, 4), dtype), "b1": jnp.zeros(4, dtype),
              "w2": jax.random.normal(k[1], (4, 1), dtype) * 0.5}
    support = (jax.random.normal(k[2], (6, 3), dtype), jax.random.normal(k[3], (6, 1), dtype))
    query = (jax.random.normal(k[4], (6, 3), dtype), jax.random.normal(k[5], (6, 1), dtype))
    rates = jax.tree.map(lambda p: 0.05 + 0.1 * jax.random.uniform(
        jax.random.PRNGKey(p.size), (1, *p.shape), dtype), params)
    return params, rates, support, query
