"""The smallest form of the bug (paste-able into an issue); see maxpool_second_order.py and
README.md."""
import jax
import jax.numpy as jnp
import numpy as np


def loss(x, w, pool):
    mean = x.mean(axis=(0, 1, 2))
    var = jnp.square(x - mean).mean(axis=(0, 1, 2))
    y = (x - mean) * jax.lax.rsqrt(var + 1e-5)      # batch norm with batch statistics
    n, h, wd, c = y.shape
    y = y.reshape(n, h // 2, 2, wd // 2, 2, c)
    if pool == "max":                                # 2x2 max-pool as reshape + max
        p = y.max(axis=(2, 4))
    else:                                            # same pool as selections
        a, b, d, e = y[:, :, 0, :, 0], y[:, :, 0, :, 1], y[:, :, 1, :, 0], y[:, :, 1, :, 1]
        t, u = jnp.where(b > a, b, a), jnp.where(e > d, e, d)
        p = jnp.where(u > t, u, t)
    return jnp.sum(p * w)

rng = np.random.default_rng(0)
x = jnp.asarray(rng.standard_normal((5, 2, 2, 128)), jnp.float32)
w = jnp.asarray(rng.standard_normal((5, 1, 1, 128)), jnp.float32)
rel = lambda a, b: float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))
g_eager = jax.grad(loss)(x, w, "max")
g_jit = jax.jit(jax.grad(loss), static_argnums=2)(x, w, "max")
g_where = jax.jit(jax.grad(loss), static_argnums=2)(x, w, "where")
print(jax.__version__, jax.default_backend())
print("jit(grad) of reshape+max vs eager grad:", rel(g_jit, g_eager))
print("jit(grad) of where-pool  vs eager grad:", rel(g_where, g_eager))
