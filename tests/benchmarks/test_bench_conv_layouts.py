"""The benchmark-only convolution layouts of ``bench.py`` compute the library's convolution."""

import jax
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
