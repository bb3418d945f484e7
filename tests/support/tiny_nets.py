"""A tiny classifier written as an NNX module and as its linen twin, and its tasks
(``test_model_adapters``, ``test_facade``)."""

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
from flax import nnx

WAYS = 2


class NnxNet(nnx.Module):
    """Dense -> BatchNorm -> relu -> Dense, tiny."""

    def __init__(self, rngs):
        self.lin = nnx.Linear(3, 4, rngs=rngs)
        self.bn = nnx.BatchNorm(4, rngs=rngs)
        self.head = nnx.Linear(4, WAYS, rngs=rngs)

    def __call__(self, x):
        return self.head(nnx.relu(self.bn(self.lin(x))))


class LinenNet(nn.Module):
    """The linen twin of ``NnxNet`` (a standard ``nn.BatchNorm``)."""

    @nn.compact
    def __call__(self, x):
        x = nn.Dense(4)(x)
        x = nn.BatchNorm(use_running_average=False, epsilon=1e-5)(x)
        return nn.Dense(WAYS)(nn.relu(x))


def classification_tasks(num_tasks=2, seed=0):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=(num_tasks, 8, 3)), jnp.float32)
    y = jnp.asarray(np.tile(np.arange(4) % WAYS, (num_tasks, 2)))
    return (x[:, :4], y[:, :4]), (x[:, 4:], y[:, 4:])
