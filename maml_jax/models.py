"""Flax models of the MAML / MAML++ papers: the Conv4 classifier and the sinusoid MLP.

Every model's ``__call__`` takes ``(x, step=0, use_running_average=None)``: ``step`` is
the inner-step index that selects per-step batch-norm weights and statistics (MAML++
BNWB / BNRS). Models without batch norm ignore it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = [
    "CONV_IMPLS",
    "POOL_IMPLS",
    "Conv3x3",
    "StepBatchNorm",
    "Conv4",
    "MLP",
    "conv3x3_patches",
    "max_pool_2x2",
    "resolve_conv_impl",
]

CONV_IMPLS = ("xla", "patches")
POOL_IMPLS = ("select", "reduce_window")


def resolve_conv_impl(impl: str) -> str:
    """``"auto"`` -> ``"patches"`` on the CPU and GPU backends, ``"xla"`` elsewhere; any
    other value is returned as is.

    XLA:CPU runs the convolutions of the second-order MAML step, and vmapped per-task
    convolutions, far slower than the equivalent matmuls. On a GPU the vmapped per-task
    convolutions become grouped cuDNN convolutions with many small layout kernels, and the
    matmuls are faster (docs/performance.md); the GPU meta-gradient check passed for both
    (NVIDIA H200, 2026-12-04, docs/results.md). TPUs keep ``"xla"``: neither was checked
    or timed there.
    """
    if impl == "auto":
        return "patches" if jax.default_backend() in ("cpu", "gpu") else "xla"
    return impl

# Xavier/Glorot uniform weights and zero biases: the MAML++ reference's initialisation.
_kernel_init = nn.initializers.xavier_uniform()


def conv3x3_patches(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """A stride-1, 'SAME'-padded 3x3 convolution written as im2col + one matmul.

    Under ``jax.vmap`` over per-task kernels this becomes a batched matmul instead of the
    grouped convolution that ``lax.conv`` turns into (which XLA:CPU runs slowly).

    Args:
      x: ``(N, H, W, Cin)`` input.
      kernel: ``(3, 3, Cin, Cout)`` (HWIO, flax's layout).

    Returns:
      ``(N, H, W, Cout)``.
    """
    kh, kw, cin, cout = kernel.shape
    n, h, w, _ = x.shape
    xp = jnp.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    # Concatenate the kh*kw shifted views along channels: feature order (dy, dx, cin),
    # which is exactly the row-major flattening of the HWIO kernel's first three axes.
    cols = [xp[:, dy:dy + h, dx:dx + w, :] for dy in range(kh) for dx in range(kw)]
    patches = jnp.concatenate(cols, axis=-1)
    return jnp.dot(patches.reshape(n * h * w, kh * kw * cin),
                   kernel.reshape(kh * kw * cin, cout)).reshape(n, h, w, cout)


def max_pool_2x2(x: jax.Array) -> jax.Array:
    """VALID 2x2 max-pool with stride 2 (as ``F.max_pool2d(x, 2)``): 28->14->7->3->1.

    The window's four elements are compared in a tournament of ``jnp.where`` selections
    (row-major order, the first maximum wins, as in PyTorch), so the gradient of every
    window goes to exactly one input, selected by a comparison of primal values. This
    is the formulation whose derivatives do not depend on bit-exact equality of
    recomputed values:

    * ``jnp.max`` (reshape + max, this function's earlier form) differentiates through
      ``operand == max(operand)``. XLA:CPU recomputes the operand in several fusions and
      contracts a multiply-subtract into a fused multiply-add in some of them only, so
      the copies differ in the last bit, no element of a window compares equal, and the
      window's gradient is silently lost: 8-40% wrong meta-gradients for the 64-filter
      Conv4 (``benchmarks/repro/``), NaN (0/0) at XLA optimisation level 0.
    * ``nn.max_pool`` (``lax.reduce_window``) is correct but its second-order
      derivative (``select_and_scatter``) is slow on XLA:CPU.

    Values equal ``nn.max_pool``'s exactly. At exact ties the gradient goes to the first
    maximal element (PyTorch's choice), and a NaN in a window is not propagated (the
    batch-norm statistics before the pool already are NaN then).

    Args:
      x: ``(N, H, W, C)``.

    Returns:
      ``(N, H // 2, W // 2, C)``.

    Example:
      >>> max_pool_2x2(jnp.arange(16.0).reshape(1, 4, 4, 1))[0, :, :, 0]
      Array([[ 5.,  7.],
             [13., 15.]], dtype=float32)
    """
    n, h, w, c = x.shape
    x = x[:, :h // 2 * 2, :w // 2 * 2].reshape(n, h // 2, 2, w // 2, 2, c)
    top_left, top_right = x[:, :, 0, :, 0], x[:, :, 0, :, 1]
    bottom_left, bottom_right = x[:, :, 1, :, 0], x[:, :, 1, :, 1]
    # Strict '>' keeps the earlier element at ties: first maximum in row-major order.
    top = jnp.where(top_right > top_left, top_right, top_left)
    bottom = jnp.where(bottom_right > bottom_left, bottom_right, bottom_left)
    return jnp.where(bottom > top, bottom, top)


class Conv3x3(nn.Module):
    """3x3 convolution, stride 1, padding 1, with bias; params named as ``nn.Conv``'s.

    Attributes:
      features: output channels.
      impl: ``"xla"`` (``lax.conv_general_dilated``), ``"patches"`` (im2col + matmul) or
        ``"auto"`` (the default: ``"patches"`` on CPU and GPU, ``"xla"`` on other
        backends; both compute the same convolution).
    """

    features: int
    impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        impl = resolve_conv_impl(self.impl)
        if impl not in CONV_IMPLS:
            raise ValueError(f"unknown conv impl {self.impl!r}; expected one of "
                             f"{(*CONV_IMPLS, 'auto')}")
        cin = x.shape[-1]
        kernel = self.param("kernel", _kernel_init, (3, 3, cin, self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        kernel = kernel.astype(x.dtype)
        if impl == "xla":
            y = jax.lax.conv_general_dilated(
                x, kernel, (1, 1), ((1, 1), (1, 1)),
                dimension_numbers=("NHWC", "HWIO", "NHWC"))
        else:
            y = conv3x3_patches(x, kernel)
        return y + bias.astype(x.dtype)


class StepBatchNorm(nn.Module):
    """Batch norm with per-inner-step weights and running statistics (MAML++ BNWB/BNRS).

    Normalises with the current batch's statistics (the MAML++ reference does so at train
    and at test time), or with the per-step running statistics when
    ``use_running_average`` is True (non-transductive evaluation).

    Parameters ``scale``/``bias`` have shape ``(num_steps, C)`` when ``per_step`` else
    ``(C,)``; collection ``batch_stats`` holds ``mean``/``var`` of shape ``(num_steps, C)``
    (or ``(C,)``). When the collection ``bn_obs`` is mutable, the batch's own mean and
    (unbiased) variance, shape ``(C,)``, are written there so that the meta-training step
    can update the running statistics outside the gradient path.

    ``step`` beyond ``num_steps - 1`` uses the last step's weights (evaluation with more
    inner steps than meta-training used).
    """

    num_steps: int = 1
    per_step: bool = True
    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x: jax.Array, step: Any = 0, use_running_average: bool = False):
        c = x.shape[-1]
        shape = (self.num_steps, c) if self.per_step else (c,)
        scale = self.param("scale", nn.initializers.ones, shape)
        bias = self.param("bias", nn.initializers.zeros, shape)
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros(shape, jnp.float32))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones(shape, jnp.float32))
        idx = jnp.minimum(jnp.asarray(step, jnp.int32), self.num_steps - 1)
        if self.per_step:
            scale, bias = scale[idx], bias[idx]
        axes = tuple(range(x.ndim - 1))
        # Statistics in float32 at least (bfloat16 inputs), float64 for float64 inputs.
        xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
        if use_running_average:
            mean = ra_mean.value[idx] if self.per_step else ra_mean.value
            var = ra_var.value[idx] if self.per_step else ra_var.value
        else:
            mean = jnp.mean(xf, axis=axes)
            var = jnp.mean(jnp.square(xf - mean), axis=axes)
            if self.is_mutable_collection("bn_obs"):
                n = max(1, x.size // c)
                obs_mean = self.variable("bn_obs", "mean", lambda: jnp.zeros((c,), jnp.float32))
                obs_var = self.variable("bn_obs", "var", lambda: jnp.ones((c,), jnp.float32))
                obs_mean.value = jax.lax.stop_gradient(mean).astype(jnp.float32)
                # Unbiased, as torch stores in running_var.
                unbiased = var * (n / max(n - 1, 1))
                obs_var.value = jax.lax.stop_gradient(unbiased).astype(jnp.float32)
        inv = jax.lax.rsqrt(var + self.epsilon) * scale
        return ((xf - mean) * inv + bias).astype(x.dtype)


_ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": nn.relu,
    # torch.nn.functional.leaky_relu's default slope, which the reference uses.
    "leaky_relu": lambda x: nn.leaky_relu(x, negative_slope=0.01),
}


class Conv4(nn.Module):
    """The MAML / MAML++ four-block convolutional classifier.

    Each block: 3x3 conv (padding 1, 'SAME') -> batch norm -> activation -> 2x2 max-pool,
    then flatten -> linear head. 64 filters for Omniglot, 48 for mini-ImageNet.

    Attributes:
      num_classes: output classes (ways).
      num_filters: filters per conv layer.
      num_steps: inner steps, for per-step batch norm (shape ``(num_steps, C)``).
      per_step_bn: per-step BN weights and running statistics (MAML++); else shared.
      activation: ``"leaky_relu"`` (reference) or ``"relu"``.
      conv_impl: ``"auto"`` (default: ``"patches"`` on CPU and GPU, ``"xla"`` elsewhere),
        ``"xla"`` or ``"patches"`` (see ``Conv3x3``).
      pool_impl: ``"select"`` (default, ``max_pool_2x2``) or ``"reduce_window"``
        (``nn.max_pool``); the same values and, up to exact ties, the same derivatives of
        every order. Never a ``jnp.max`` over the window (see ``max_pool_2x2``).
      dtype: computation dtype (params stay float32).

    Example:
      >>> model = Conv4(num_classes=5, num_steps=5)
      >>> x = jnp.zeros((2, 28, 28, 1))
      >>> variables = jax.jit(model.init)(jax.random.PRNGKey(0), x)
      >>> logits = jax.jit(model.apply, static_argnames="step")(variables, x, step=3)
      >>> logits.shape
      (2, 5)
    """

    num_classes: int
    num_filters: int = 64
    num_blocks: int = 4
    num_steps: int = 1
    per_step_bn: bool = True
    activation: str = "leaky_relu"
    conv_impl: str = "auto"
    pool_impl: str = "select"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, step: Any = 0, use_running_average: bool = False):
        if self.activation not in _ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; "
                             f"expected {sorted(_ACTIVATIONS)}")
        if self.pool_impl not in POOL_IMPLS:
            raise ValueError(f"unknown pool impl {self.pool_impl!r}; expected one of {POOL_IMPLS}")
        if x.ndim != 4:
            raise ValueError(f"Conv4 expects NHWC images of rank 4, got shape {x.shape}")
        act = _ACTIVATIONS[self.activation]
        h = x.astype(self.dtype)
        for i in range(self.num_blocks):
            h = Conv3x3(self.num_filters, impl=self.conv_impl, name=f"conv{i}")(h)
            h = StepBatchNorm(num_steps=self.num_steps, per_step=self.per_step_bn,
                              name=f"norm{i}")(h, step, use_running_average)
            h = act(h)
            if self.pool_impl == "select":
                h = max_pool_2x2(h)
            else:
                h = nn.max_pool(h, (2, 2), strides=(2, 2), padding="VALID")
        h = h.reshape(h.shape[0], -1)
        dense = nn.Dense(self.num_classes, kernel_init=_kernel_init, name="head",
                         dtype=self.dtype)
        # float32 logits for low-precision compute dtypes; float64 stays float64.
        return dense(h).astype(jnp.promote_types(self.dtype, jnp.float32))


class MLP(nn.Module):
    """The sinusoid regressor of the MAML paper: 2 hidden layers of 40, ReLU.

    Example:
      >>> model = MLP()
      >>> params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 1)))["params"]
    """

    hidden: Sequence[int] = (40, 40)
    out: int = 1

    @nn.compact
    def __call__(self, x: jax.Array, step: Any = 0, use_running_average: bool = False):
        del step, use_running_average  # no batch norm
        for i, width in enumerate(self.hidden):
            x = nn.relu(nn.Dense(width, name=f"dense{i}")(x))
        return nn.Dense(self.out, name="head")(x)
