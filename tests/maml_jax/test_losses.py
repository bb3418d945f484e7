"""maml_jax.losses: the label checks, at trace time and on host arrays."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import maml_jax as mj


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


def test_cross_entropy_reports_labels_outside_the_classes():
    """On the device a label 3 of 3 classes is a NaN loss and a -1 a finite one (no error):
    the loss counts both in its aux, and clean labels count 0; mse has no labels to count."""
    logits = jnp.zeros((4, 3))
    for labels, errors, finite in (([0, 1, 2, 0], 0, True), ([0, 3, 2, 0], 1, False),
                                   ([-1, 1, 2, 0], 1, True), ([-1, 1, 2, 5], 2, False)):
        value, aux = jax.jit(lambda o, y: mj.prediction_loss(o, y, "cross_entropy"))(
            logits, jnp.array(labels))
        assert bool(jnp.isfinite(value)) == finite
        assert int(aux[mj.LABEL_ERRORS]) == errors
        assert aux[mj.LABEL_ERRORS].dtype == jnp.int32
    _, aux = mj.prediction_loss(jnp.zeros((4, 1)), jnp.zeros((4, 1)), "mse")
    assert mj.LABEL_ERRORS not in aux
