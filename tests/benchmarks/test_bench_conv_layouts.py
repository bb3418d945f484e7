"""The benchmark-only convolution layouts of ``bench.py`` compute the library's convolution."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import bench
from maml_jax import models


@pytest.mark.parametrize("name", sorted(bench._CONV_OVERRIDES))
def test_conv_layout_equals_patches_conv(name):
    kx, kk = jax.random.split(jax.random.PRNGKey(0))
    x = jax.random.normal(kx, (2, 7, 5, 3))
    kernel = jax.random.normal(kk, (3, 3, 3, 4))
    np.testing.assert_allclose(bench._CONV_OVERRIDES[name](x, kernel),
                               models.conv3x3_patches(x, kernel), rtol=1e-5, atol=1e-5)


def test_hand_written_conv_derivative_is_autodiff_s_to_second_order():
    """The "vjp" layout's own derivative rule: first and second derivatives (a gradient of
    a gradient, as the meta-gradient takes) equal autodiff's of the im2col convolution."""
    with jax.enable_x64(True):
        kx, kk = jax.random.split(jax.random.PRNGKey(1))
        x = jax.random.normal(kx, (2, 6, 5, 3), jnp.float64)
        kernel = jax.random.normal(kk, (3, 3, 3, 4), jnp.float64)

        def grads(conv):
            inner = lambda x, k: jnp.sum(jnp.sin(conv(x, k)) ** 2)
            outer = lambda x, k: sum(jnp.sum(jnp.cos(g)) for g in jax.grad(inner, (0, 1))(x, k))
            return jax.grad(inner, (0, 1))(x, kernel), jax.grad(outer, (0, 1))(x, kernel)

        for got, want in zip(jax.tree.leaves(grads(bench._CONV_OVERRIDES["vjp"])),
                             jax.tree.leaves(grads(models.conv3x3_patches)), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
