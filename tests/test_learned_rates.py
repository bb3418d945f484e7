"""Learned inner rates: Meta-SGD's shared per-weight rates, the log-space rate update and
its presets, and ANIL's head-only inner loop (issue 21).

Closed forms and independent implementations on tiny models: the Meta-SGD rates against
the per-step per-weight rates repeated at every step and against a Python loop of SGD
steps (meta-gradient, float64 finite differences); the log-space update against Adam run
on log(rate) directly; ANIL's adapted parameters against the closed form of a head-only
SGD step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.test_util import check_grads

import maml_jax as mj
from maml_jax import core, meta, models


def _mlp_loss(params, batch, step):
    del step
    x, y = batch
    h = jnp.tanh(x @ params["w1"] + params["b1"])
    return jnp.mean((h @ params["w2"] - y) ** 2)


def _problem(dtype=jnp.float32):
    k = jax.random.split(jax.random.PRNGKey(0), 6)
    params = {"w1": jax.random.normal(k[0], (3, 4), dtype), "b1": jnp.zeros(4, dtype),
              "w2": jax.random.normal(k[1], (4, 1), dtype) * 0.5}
    support = (jax.random.normal(k[2], (6, 3), dtype), jax.random.normal(k[3], (6, 1), dtype))
    query = (jax.random.normal(k[4], (6, 3), dtype), jax.random.normal(k[5], (6, 1), dtype))
    rates = jax.tree.map(lambda p: 0.05 + 0.1 * jax.random.uniform(
        jax.random.PRNGKey(p.size), (1, *p.shape), dtype), params)
    return params, rates, support, query


def test_meta_sgd_rates_are_one_per_weight_shared_by_every_step():
    params, rates, support, _ = _problem()
    lrs = core.init_inner_lrs(params, 4, 0.1, "meta_sgd")
    assert jax.tree.map(jnp.shape, lrs) == {"w1": (1, 3, 4), "b1": (1, 4), "w2": (1, 4, 1)}
    shared = core.adapt(_mlp_loss, params, rates, support, num_steps=3)
    repeated = core.adapt(_mlp_loss, params, jax.tree.map(lambda r: jnp.repeat(r, 3, 0), rates),
                          support, num_steps=3)
    for a, b in zip(jax.tree.leaves(shared), jax.tree.leaves(repeated), strict=True):
        np.testing.assert_array_equal(a, b)
    extended = core.extend_inner_lrs(rates, 5)
    assert extended["w1"].shape == (5, 3, 4)


def _python_loop_meta_loss(params, rates, support, query, num_steps):
    """Meta-SGD written out: num_steps SGD steps with the same per-weight rates."""
    p = params
    for _ in range(num_steps):
        g = jax.grad(_mlp_loss)(p, support, 0)
        p = {k: p[k] - rates[k][0] * g[k] for k in p}
    return _mlp_loss(p, query, 0)


def test_meta_sgd_meta_gradient_matches_a_python_loop_and_finite_differences():
    with jax.enable_x64(True):
        params, rates, support, query = _problem(jnp.float64)
        config = mj.MetaConfig(num_inner_steps=3, msl=False, learn_inner_lrs=True,
                               task_batching="vmap")
        tasks = jax.tree.map(lambda a: a[None], (support, query))
        _, grads, _ = meta.meta_gradient({"params": params, "inner_lrs": rates}, tasks,
                                         step=0, loss_fn=_mlp_loss, config=config,
                                         first_order=False, msl=False)
        want = jax.grad(_python_loop_meta_loss, argnums=(0, 1))(params, rates, support, query, 3)
        for got, ref in ((grads["params"], want[0]), (grads["inner_lrs"], want[1])):
            for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(ref), strict=True):
                np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
        # The loop itself against float64 central differences, in the rates and the weights.
        check_grads(lambda r, p: _python_loop_meta_loss(p, r, support, query, 3),
                    (rates, params), order=1, modes=["rev"], eps=1e-6)


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
    (lambda: core.init_inner_lrs({"w": jnp.ones(2)}, 2, 0.1, "per_weight"),
     "unknown granularity 'per_weight'"),
    (lambda: models.inner_loop_mask({"body": {"w": 1}, "out": {"w": 1}}, only="head"),
     r"no top-level module 'head'; they have \['body', 'out'\]"),
])
def test_bad_requests_name_the_value(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_presets_and_the_default_of_each_granularity():
    assert mj.rate_update_preset("reference") == {"inner_lr_update": "additive",
                                                  "inner_lr_scale": None}
    assert mj.rate_update_preset("log") == {"inner_lr_update": "log", "inner_lr_scale": 0.1}
    for granularity, preset in (("scalar", "reference"), ("layer_step", "reference"),
                                ("parameter", "log"), ("meta_sgd", "log")):
        assert mj.default_rate_update(granularity) == preset
        assert mj.rate_update_preset("auto", granularity) == mj.RATE_UPDATE_PRESETS[preset]
    with pytest.raises(ValueError, match="needs the granularity"):
        mj.rate_update_preset("auto")
    # The facade follows the same default: its optimizer moves the rates as the preset's.
    mp = {"params": {"w": jnp.ones(2)}, "inner_lrs": {"w": jnp.array([0.1, 0.2])}}
    grads = {"params": {"w": jnp.array([1.0, -1.0])}, "inner_lrs": {"w": jnp.array([2.0, -3.0])}}
    for granularity, preset in (("meta_sgd", "log"), ("layer_step", "reference")):
        maml = mj.ModelAgnosticMetaLearning(mj.MLP(), lr_granularity=granularity, loss="mse",
                                            outer_lr=1e-2, plus_plus=False)
        ref = mj.make_meta_optimizer(1e-2, **mj.RATE_UPDATE_PRESETS[preset])
        got, _ = maml.optimizer.update(grads, maml.optimizer.init(mp), mp)
        want, _ = ref.update(grads, ref.init(mp), mp)
        np.testing.assert_allclose(got["inner_lrs"]["w"], want["inner_lrs"]["w"], rtol=1e-6)


def test_anil_adapts_the_head_alone():
    """One inner SGD step with the ANIL mask: the body is untouched, the head takes the
    closed-form step ``head - rate * d loss / d head``."""
    model = mj.MLP(hidden=(5,))
    params = model.init(jax.random.PRNGKey(1), jnp.zeros((1, 1)))["params"]
    mask = models.inner_loop_mask(params, only="head")
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


def _sinusoid_run(rate_update: str, iterations: int):
    """Per-parameter per-step rates, 5 inner steps, 5-shot sinusoid, Adam 1e-3 (issue 21's
    reproduction); returns the iterations done, or raises NonFiniteLossError."""
    from experiments import sinusoid
    m = sinusoid.MethodConfig(name="per-parameter", num_inner_steps=5, inner_lr=0.01,
                              granularity="parameter", learn_inner_lrs=True, msl=False,
                              **mj.rate_update_preset(rate_update))
    cfg = sinusoid.SinusoidConfig(methods=(m,), iterations=iterations, iterations_per_epoch=100,
                                  k_train=5, seed=0, steps_per_call=100)
    _, log, _ = sinusoid.train_method(cfg, m, progress=False)
    return log[-1]["iteration"]


def test_per_parameter_rates_in_log_space_pass_where_the_reference_diverges():
    """Measured (README, "Learned inner rates"; benchmarks/rate_divergence.py): with the
    reference update this run hits a non-finite loss at outer step ~160, as the rates race
    away; updated in log space they move by ~1e-4 of their value per step."""
    with pytest.raises(mj.NonFiniteLossError):
        _sinusoid_run("reference", 300)
    assert _sinusoid_run("log", 300) == 300


def test_clip_inner_grads_closed_form():
    g = {"a": jnp.array([3.0, 0.0]), "b": jnp.array(4.0), "frozen": jnp.array([100.0])}
    lrs = {"a": 0.1, "b": 0.1, "frozen": None}   # the frozen leaf's gradient is not counted
    clipped = core.clip_inner_grads(g, lrs, 1.0)
    np.testing.assert_allclose(clipped["a"], [0.6, 0.0], rtol=1e-6)
    np.testing.assert_allclose(clipped["b"], 0.8, rtol=1e-6)
    unchanged = core.clip_inner_grads(g, lrs, 5.0)   # norm 5 is not above the bound
    for k in g:
        np.testing.assert_allclose(unchanged[k], g[k], rtol=1e-6)
    assert core.clip_inner_grads(g, lrs, None) is g
    # An all-zero inner gradient: zero step, and a finite meta-gradient through the norm.
    meta_grad = jax.grad(lambda w: jnp.sum(core.clip_inner_grads(
        {"w": w * 0.0}, {"w": 0.1}, 1.0)["w"]))(jnp.ones(3))
    assert bool(jnp.all(jnp.isfinite(meta_grad)))


def _clipped_python_loop_meta_loss(params, rates, support, query, num_steps, clip):
    """Meta-SGD with each inner gradient scaled to global norm <= clip, written out."""
    p = params
    for _ in range(num_steps):
        g = jax.grad(_mlp_loss)(p, support, 0)
        norm = jnp.sqrt(sum(jnp.sum(v ** 2) for v in g.values()))
        scale = jnp.minimum(1.0, clip / norm)
        p = {k: p[k] - rates[k][0] * scale * g[k] for k in p}
    return _mlp_loss(p, query, 0)


def test_clipped_inner_loop_meta_gradient_matches_a_python_loop_and_finite_differences():
    """Second order through the clip's norm: against the loop above and float64 central
    differences, with the clip active (the first inner gradient is over twice the bound)."""
    with jax.enable_x64(True):
        params, rates, support, query = _problem(jnp.float64)
        clip = 0.3
        g0 = jax.grad(_mlp_loss)(params, support, 0)
        assert float(jnp.sqrt(sum(jnp.sum(v ** 2) for v in g0.values()))) > 2 * clip
        config = mj.MetaConfig(num_inner_steps=3, msl=False, learn_inner_lrs=True,
                               task_batching="vmap", inner_grad_clip=clip)
        tasks = jax.tree.map(lambda a: a[None], (support, query))
        loss, grads, _ = meta.meta_gradient({"params": params, "inner_lrs": rates}, tasks,
                                            step=0, loss_fn=_mlp_loss, config=config,
                                            first_order=False, msl=False)
        args = (support, query, 3, clip)
        np.testing.assert_allclose(loss, _clipped_python_loop_meta_loss(params, rates, *args),
                                   rtol=1e-12)
        want = jax.grad(_clipped_python_loop_meta_loss, argnums=(0, 1))(params, rates, *args)
        for got, ref in ((grads["params"], want[0]), (grads["inner_lrs"], want[1])):
            for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(ref), strict=True):
                np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
        check_grads(lambda r, p: _clipped_python_loop_meta_loss(p, r, *args),
                    (rates, params), order=1, modes=["rev"], eps=1e-6)
        # Evaluation adapts the same way: its query loss after 3 steps is the same number.
        losses, _ = meta.evaluate_tasks(_mlp_loss, params, rates, tasks, num_steps=3,
                                        inner_grad_clip=clip)
        np.testing.assert_allclose(losses[0, 3], loss, rtol=1e-12)


def test_clipped_inner_loop_stays_bounded_where_the_plain_one_overflows():
    """A loss too curved for its rate (curvature 1000, rate 0.01: each plain step multiplies
    the weight by -9) overflows float32 in 50 steps; clipped to norm c, K steps move the
    weight by at most K * rate * c."""
    loss = lambda p, b, s: 500.0 * jnp.sum(p["w"] ** 2)
    p0 = {"w": jnp.array([1.0])}
    plain = core.adapt(loss, p0, {"w": 0.01}, None, num_steps=50)
    assert not bool(jnp.all(jnp.isfinite(plain["w"])))
    clipped = core.adapt(loss, p0, {"w": 0.01}, None, num_steps=50, grad_clip=100.0)
    assert float(jnp.max(jnp.abs(clipped["w"] - p0["w"]))) <= 50 * 0.01 * 100.0 + 1e-4


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
        core.adapt(_mlp_loss, {"w": jnp.ones(())}, {"w": 0.1}, None, num_steps=1, grad_clip=0)
