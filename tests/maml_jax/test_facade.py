"""maml_jax.facade (ModelAgnosticMetaLearning): it trains and learns (MLP, a full-size Conv4,
a linen model with a standard batch norm), adapts one task or a batch, and names bad
inputs."""

import chex
import jax
import numpy as np
import pytest

import maml_jax as mj
from tests.support.tiny_nets import LinenNet, classification_tasks


def test_conv4_smoke_outer_step():
    """One real (64-filter) Conv4 second-order MAML++ step through the facade: its update
    against the shape of Adam's first step (the full-size gradient itself:
    test_meta_full_size.py), its running statistics moved at every step."""
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


@pytest.fixture(scope="module")
def linen_facade():
    maml = mj.ModelAgnosticMetaLearning(LinenNet(), inner_lr=0.1, inner_steps=1)
    (xs, ys), (xq, yq) = classification_tasks(seed=3)
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
    (xs, ys), _ = classification_tasks(seed=4)
    batched = maml.adapt(xs, ys)
    one = maml.adapt(xs[1], ys[1])
    chex.assert_trees_all_close(jax.tree.map(lambda a: a[1], batched), one, rtol=1e-5)
    with pytest.raises(ValueError, match="neither one task"):
        maml.adapt(xs[None], ys[None])


def test_facade_label_errors(linen_facade):
    maml, _, _ = linen_facade
    (xs, ys), (xq, yq) = classification_tasks(seed=5)
    with pytest.raises(ValueError, match=r"query labels must lie in \[0, 2\)"):
        maml.meta_train_step(xs, ys, xq, yq + 2)
    with pytest.raises(TypeError, match="support labels must be integer class indices"):
        maml.evaluate(xs, ys.astype(np.float32), xq, yq)
