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
