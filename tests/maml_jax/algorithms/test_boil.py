"""BOIL (Oh et al. 2021): MAML whose inner loop adapts the body and freezes the head
(``inner_loop_mask(freeze="head")``). The inner loop leaves the head untouched, the body
takes the closed-form SGD step, and the meta-gradient (which reaches the head through the
query loss) matches float64 finite differences."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.test_util import check_grads

import maml_jax as mj
from maml_jax import core


def _problem(dtype=jnp.float32):
    model = mj.MLP(hidden=(5,))
    params = model.init(jax.random.PRNGKey(1), jnp.zeros((1, 1)))["params"]
    params = jax.tree.map(lambda p: p.astype(dtype), params)
    mask = mj.inner_loop_mask(params, freeze="head")
    lrs = core.init_inner_lrs(params, 2, 0.3, "layer_step", mask=mask)
    lrs = jax.tree.map(lambda r: r.astype(dtype), lrs)
    x = jnp.linspace(-1, 1, 8, dtype=dtype)[:, None]
    return model, params, mask, lrs, (x, jnp.sin(3 * x)), (x + 0.05, jnp.sin(3 * x + 0.15))


def test_boil_adapts_the_body_alone():
    model, params, mask, lrs, support, _ = _problem()
    assert jax.tree.map(bool, mask) == {"dense0": {"kernel": True, "bias": True},
                                        "head": {"kernel": False, "bias": False}}
    loss_fn = mj.make_loss_fn(model, "mse")
    adapted = core.adapt(loss_fn, params, lrs, support, num_steps=2)
    for name in ("kernel", "bias"):
        np.testing.assert_array_equal(adapted["head"][name], params["head"][name])
    adapted = core.adapt(loss_fn, params, core.extend_inner_lrs(lrs, 1), support, num_steps=1)
    g = jax.grad(lambda p: core.split_loss_output(loss_fn(p, support, 0))[0])(params)
    for name in ("kernel", "bias"):
        np.testing.assert_allclose(adapted["dense0"][name], params["dense0"][name]
                                   - lrs["dense0"][name][0] * g["dense0"][name], rtol=1e-6)


def test_boil_meta_gradient_matches_finite_differences():
    with jax.enable_x64(True):
        model, params, _, lrs, support, query = _problem(jnp.float64)
        tasks = jax.tree.map(lambda a: a[None], (support, query))
        cfg = mj.MetaConfig(num_inner_steps=2, msl=False)
        grad_fn = functools.partial(mj.meta_gradient, tasks=tasks, step=0,
                                    loss_fn=mj.make_loss_fn(model, "mse"), config=cfg,
                                    phase=(False, False))
        meta_params = {"params": params, "inner_lrs": lrs}
        loss = lambda mp: grad_fn(mp)[0]
        check_grads(loss, (meta_params,), order=1, modes=("rev",), atol=1e-6, rtol=1e-6)
        grads = grad_fn(meta_params)[1]
        # the frozen head is meta-learned: its meta-gradient is not zero
        assert float(jnp.max(jnp.abs(grads["params"]["head"]["kernel"]))) > 1e-4
