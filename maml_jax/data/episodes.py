"""Episodes: N-way K-shot Q-query tasks sampled on the device, for every image dataset.

Every image source (:mod:`maml_jax.data.omniglot`, :mod:`maml_jax.data.image_folder`,
:mod:`maml_jax.data.miniimagenet`) gives the samplers here one split's classes, either as

* a float array ``[C, D, H, W]`` or ``[C, D, H, W, ch]``: ``C`` classes of ``D`` images,
  used as they are (Omniglot: 1.0 for ink, 0.0 for paper); or
* a :class:`ClassImages`: images with classes of different sizes (``counts``, the rest
  padding) and a per-channel ``mean``/``std`` applied inside the jitted sampler. ``uint8``
  images stay ``uint8`` on the device (4x less memory than float32) and become
  ``(x / 255 - mean) / std``; float images become ``(x - mean) / std``
  (:meth:`ClassImages.as_float` converts a dataset that fits the device as float32).

The samplers are pure and jittable; shapes are static, so an impossible request fails in
Python before tracing.

Example:
    >>> imgs = jnp.zeros((10, 20, 28, 28))
    >>> xs, ys, xq, yq = sample_task(jax.random.PRNGKey(0), imgs, 5, 1, 15)
    >>> xs.shape, yq.shape
    ((5, 28, 28, 1), (75,))
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "ClassImages",
    "channel_stats",
    "class_expansion",
    "fixed_tasks",
    "sample_task",
    "sample_tasks",
    "validate_task_spec",
]


class ClassImages(NamedTuple):
    """One dataset's (or split's) classes as ``uint8`` images, a pytree of arrays.

    Attributes:
        images: ``[C, D, H, W, ch]``, ``uint8`` (scaled by 1/255 when sampled) or float32;
            class ``c``'s images are ``images[c, :counts[c]]``, the rest zero padding.
        counts: ``[C]`` int32, valid images per class.
        mean: ``[ch]`` float32 per-channel mean of the scaled images (normally of the
            training split, used for every split).
        std: ``[ch]`` float32 per-channel standard deviation of the scaled images.

    Example:
        >>> data = ClassImages(np.zeros((4, 6, 8, 8, 3), np.uint8), np.full(4, 6),
        ...                    np.zeros(3), np.ones(3))
        >>> data.take(np.array([0, 2])).images.shape
        (2, 6, 8, 8, 3)
    """

    images: jax.Array | np.ndarray
    counts: jax.Array | np.ndarray
    mean: jax.Array | np.ndarray
    std: jax.Array | np.ndarray

    def take(self, classes) -> ClassImages:
        """The classes ``classes`` (indices), statistics unchanged."""
        return self._replace(images=self.images[classes], counts=self.counts[classes])

    def as_float(self) -> ClassImages:
        """The same episodes from normalised float32 images (mean 0, std 1 stored): for
        datasets that fit the device as float32, which then skip the per-episode scaling."""
        x = np.asarray(self.images, np.float32)
        if self.images.dtype == np.uint8:
            x = x / np.float32(255.0)
        mean, std = np.asarray(self.mean, np.float32), np.asarray(self.std, np.float32)
        ch = x.shape[-1]
        return ClassImages((x - mean) / std, self.counts, np.zeros(ch, np.float32),
                           np.ones(ch, np.float32))


def channel_stats(images: np.ndarray, counts: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of ``uint8`` images scaled to [0, 1] (host, float64 sums).

    Args:
        images: ``[C, D, H, W, ch]`` ``uint8`` images of one split (normally training).
        counts: Valid images per class (the padding is left out).

    Returns:
        ``(mean, std)``, float32 arrays of one entry per channel.

    Example:
        >>> x = np.zeros((2, 3, 4, 4, 3), np.uint8); x[0] = 255
        >>> [float(v) for v in channel_stats(x)[0]]
        [0.5, 0.5, 0.5]
    """
    if images.dtype != np.uint8 or images.ndim != 5:
        raise ValueError(f"channel_stats needs uint8 [C, D, H, W, ch] images, got "
                         f"{images.dtype} {tuple(images.shape)}")
    ch = images.shape[-1]
    total, total_sq, n = np.zeros(ch), np.zeros(ch), 0
    for c in range(images.shape[0]):  # one class at a time: no float copy of the split
        d = images.shape[1] if counts is None else int(counts[c])
        block = images[c, :d].reshape(-1, ch).astype(np.float64) / 255.0
        total += block.sum(0)
        total_sq += (block * block).sum(0)
        n += block.shape[0]
    mean = total / n
    std = np.sqrt(np.maximum(total_sq / n - mean * mean, 0.0))
    if np.any(std == 0):
        raise ValueError("channel_stats: a channel is constant over the split (std 0)")
    return mean.astype(np.float32), std.astype(np.float32)


def validate_task_spec(
    num_classes_in_split: int,
    num_ways: int,
    k_shot: int,
    q_query: int,
    drawings: int = 20,
    *,
    split_name: str | None = None,
) -> None:
    """Checks an N-way K-shot Q-query request against a split, in plain Python.

    Called by the samplers with static shapes, so an impossible request fails at once
    with a readable message instead of from inside JAX tracing.

    Args:
        num_classes_in_split: Number of classes available.
        num_ways: Classes per task (N).
        k_shot: Support images per class (K).
        q_query: Query images per class (Q).
        drawings: Images available in the smallest class.
        split_name: Name used in messages, e.g. ``"val"``.

    Raises:
        ValueError: If the request cannot be satisfied.

    Example:
        >>> validate_task_spec(5, 20, 1, 1, split_name="val")
        Traceback (most recent call last):
        ...
        ValueError: asked for 20-way tasks but the 'val' split has only 5 classes
    """
    where = f"the {split_name!r} split" if split_name else "the split"
    for label, value, low in (("num_ways", num_ways, 1), ("k_shot", k_shot, 1),
                              ("q_query", q_query, 0)):
        if isinstance(value, bool) or int(value) != value or value < low:
            raise ValueError(f"{label} must be an integer >= {low}, got {value!r}")
    if num_ways > num_classes_in_split:
        raise ValueError(
            f"asked for {num_ways}-way tasks but {where} has only {num_classes_in_split} classes"
        )
    if k_shot + q_query > drawings:
        raise ValueError(
            f"asked for k_shot + q_query = {k_shot} + {q_query} = {k_shot + q_query} distinct "
            f"drawings per class but {where} has only {drawings} drawings per class"
        )


def _check_images(images, rotate: bool) -> tuple[int, int]:
    """Validates the images; returns (classes, images in the smallest class)."""
    if isinstance(images, ClassImages):
        x, counts = images.images, images.counts
        if x.ndim != 5 or x.dtype not in (np.uint8, np.float32):
            raise ValueError(f"ClassImages.images must be uint8 or float32 [C, D, H, W, ch], got "
                             f"{x.dtype} {tuple(x.shape)}")
        if np.shape(counts) != (x.shape[0],):
            raise ValueError(f"ClassImages.counts must have {x.shape[0]} entries (one per class), "
                             f"got shape {np.shape(counts)}")
        if np.shape(images.mean) != (x.shape[4],) or np.shape(images.std) != (x.shape[4],):
            raise ValueError(f"ClassImages.mean and .std need {x.shape[4]} entries (channels)")
        if isinstance(counts, jax.core.Tracer):
            smallest = int(x.shape[1])  # values unknown under jit: checked where loaded
        else:
            counts = np.asarray(counts)
            if counts.min() < 1 or counts.max() > x.shape[1]:
                raise ValueError(f"ClassImages.counts must lie in [1, {x.shape[1]}], got "
                                 f"{counts.min()}..{counts.max()}")
            smallest = int(counts.min())
    else:
        x = images
        if x.ndim not in (4, 5):
            raise ValueError("images must be [classes, drawings, H, W] or [classes, drawings, H, "
                             f"W, channels], got shape {tuple(x.shape)}")
        smallest = int(x.shape[1])
    if rotate and x.shape[2] != x.shape[3]:
        raise ValueError(f"rotate=True needs square images, got {x.shape[2]}x{x.shape[3]}")
    return int(x.shape[0]), smallest


def _rot90_by(image_block: jax.Array, k: jax.Array) -> jax.Array:
    # k is traced, but jnp.rot90 needs a static count: switch over the four static
    # rotations (under vmap this lowers to a select, which is cheap for small images).
    branches = [lambda x, i=i: jnp.rot90(x, i, axes=(1, 2)) for i in range(4)]
    return jax.lax.switch(k, branches, image_block)


def _sample_impl(key, images, num_ways, k_shot, q_query, rotate):
    data, counts = (images.images, images.counts) if isinstance(images, ClassImages) else (
        images, None)
    num_classes, num_drawings, h, w = data.shape[:4]
    key_cls, key_draw, key_rot = jax.random.split(key, 3)
    classes = jax.random.choice(key_cls, num_classes, (num_ways,), replace=False)
    n_per = k_shot + q_query
    draw_keys = jax.random.split(key_draw, num_ways)
    if counts is None:
        # An independent permutation per class gives K+Q *distinct* drawings per class.
        draws = jax.vmap(lambda k: jax.random.permutation(k, num_drawings)[:n_per])(draw_keys)
    else:
        # Classes of different sizes: uniform keys, the padding pushed last, K+Q smallest.
        def pick(k, count):
            u = jax.random.uniform(k, (num_drawings,))
            return jnp.argsort(jnp.where(jnp.arange(num_drawings) < count, u, 2.0))[:n_per]

        draws = jax.vmap(pick)(draw_keys, counts[classes])
    block = data[classes[:, None], draws]                       # [N, K+Q, H, W(, ch)]
    if block.ndim == 4:
        block = block[..., None]
    if isinstance(images, ClassImages):  # normalised per episode, on the device
        x = block.astype(jnp.float32)
        if block.dtype == jnp.uint8:
            x = x / 255.0
        block = (x - images.mean) / images.std
    else:
        block = block.astype(jnp.float32)
    if rotate:
        # One rotation per class per episode, shared by its support and query images,
        # so a rotated character acts as a new class (MAML++ train-time augmentation).
        ks = jax.random.randint(key_rot, (num_ways,), 0, 4)
        block = jax.vmap(_rot90_by)(block, ks)
    ch = block.shape[-1]
    labels = jnp.arange(num_ways, dtype=jnp.int32)
    xs = block[:, :k_shot].reshape(num_ways * k_shot, h, w, ch)
    xq = block[:, k_shot:].reshape(num_ways * q_query, h, w, ch)
    ys = jnp.repeat(labels, k_shot)
    yq = jnp.repeat(labels, q_query)
    return xs, ys, xq, yq


_STATIC = ("num_ways", "k_shot", "q_query", "rotate")
_sample_jit = jax.jit(_sample_impl, static_argnames=_STATIC)


def _sample_many(keys, images, num_ways, k_shot, q_query, rotate):
    return jax.vmap(lambda k: _sample_impl(k, images, num_ways, k_shot, q_query, rotate))(keys)


_sample_many_jit = jax.jit(_sample_many, static_argnames=_STATIC)


def sample_task(
    key: jax.Array,
    images: jax.Array | np.ndarray,
    num_ways: int,
    k_shot: int,
    q_query: int,
    *,
    rotate: bool = False,
    split_name: str | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Samples one N-way K-shot task from a split's images (pure, jittable).

    ``num_ways`` distinct classes are drawn, and ``k_shot + q_query`` distinct images
    from each. Labels are ``0..num_ways-1`` in the order the classes were drawn; support
    and query are class-major (class 0's images first). With ``rotate=True`` each sampled
    class is rotated by a random multiple of 90 degrees, the same for its support and
    query images (use it for the training split only).

    Args:
        key: ``jax.random`` key.
        images: ``[C, D, H, W]`` or ``[C, D, H, W, ch]`` float images of one split, or
            its :class:`ClassImages` (checked against its smallest class).
        num_ways: Classes per task (a Python int: it fixes the output shapes).
        k_shot: Support images per class.
        q_query: Query images per class.
        rotate: Whether to apply per-class random 90-degree rotations (static).
        split_name: Used only in error messages.

    Returns:
        ``xs [N*K, H, W, ch] float32, ys [N*K] int32, xq [N*Q, H, W, ch] float32,
        yq [N*Q] int32`` (``ch`` = 1 for ``[C, D, H, W]`` images).

    Raises:
        ValueError: Before any tracing if the split cannot provide such tasks.

    Example:
        >>> imgs = jnp.zeros((10, 20, 28, 28))
        >>> xs, ys, xq, yq = sample_task(jax.random.PRNGKey(0), imgs, 5, 1, 15)
        >>> xs.shape, yq.shape
        ((5, 28, 28, 1), (75,))
    """
    classes, smallest = _check_images(images, rotate)
    validate_task_spec(classes, num_ways, k_shot, q_query, smallest, split_name=split_name)
    return _sample_jit(key, images, num_ways=int(num_ways), k_shot=int(k_shot),
                       q_query=int(q_query), rotate=bool(rotate))


def sample_tasks(
    key: jax.Array,
    images: jax.Array | np.ndarray,
    batch_size: int,
    num_ways: int,
    k_shot: int,
    q_query: int,
    *,
    rotate: bool = False,
    split_name: str | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Samples a batch of independent tasks: :func:`sample_task` vmapped over keys.

    The task ``i`` uses ``jax.random.split(key, batch_size)[i]``.

    Args:
        key: ``jax.random`` key.
        images: One split's float images or :class:`ClassImages`.
        batch_size: Number of tasks (the leading axis of every output).
        num_ways: Classes per task.
        k_shot: Support images per class.
        q_query: Query images per class.
        rotate: Whether to apply per-class random 90-degree rotations.
        split_name: Used only in error messages.

    Returns:
        ``xs [B, N*K, H, W, ch], ys [B, N*K], xq [B, N*Q, H, W, ch], yq [B, N*Q]``.

    Example:
        >>> imgs = jnp.zeros((10, 20, 28, 28))
        >>> xs, *_ = sample_tasks(jax.random.PRNGKey(0), imgs, 4, 5, 1, 5)
        >>> xs.shape
        (4, 5, 28, 28, 1)
    """
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    classes, smallest = _check_images(images, rotate)
    validate_task_spec(classes, num_ways, k_shot, q_query, smallest, split_name=split_name)
    keys = jax.random.split(key, int(batch_size))
    return _sample_many_jit(keys, images, num_ways=int(num_ways), k_shot=int(k_shot),
                            q_query=int(q_query), rotate=bool(rotate))


def fixed_tasks(
    images: jax.Array | np.ndarray,
    *,
    num_ways: int,
    k_shot: int,
    q_query: int,
    num_tasks: int = 600,
    seed: int = 0,
    split_name: str | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """A fixed, reproducible set of evaluation tasks (no rotation).

    The tasks depend only on ``seed``, the split's images and the task shape: they are
    :func:`sample_tasks` with ``jax.random.PRNGKey(seed)``, so every run (and every
    model) is evaluated on exactly the same episodes.

    Args:
        images: The evaluation split's float images or :class:`ClassImages`.
        num_ways: Classes per task.
        k_shot: Support images per class.
        q_query: Query images per class.
        num_tasks: Number of tasks (leading axis of the outputs).
        seed: Seed of the task set.
        split_name: Used only in error messages.

    Returns:
        ``xs [T, N*K, H, W, ch], ys [T, N*K], xq [T, N*Q, H, W, ch], yq [T, N*Q]``.

    Example:
        >>> imgs = jnp.zeros((10, 20, 28, 28))
        >>> xs, ys, xq, yq = fixed_tasks(imgs, num_ways=5, k_shot=1, q_query=1, num_tasks=3)
        >>> xs.shape
        (3, 5, 28, 28, 1)
    """
    return sample_tasks(
        jax.random.PRNGKey(seed), images, num_tasks, num_ways, k_shot, q_query,
        rotate=False, split_name=split_name,
    )


def class_expansion(images: jax.Array | np.ndarray) -> jax.Array | np.ndarray:
    """Makes each 90-degree rotation of a class a class of its own (4x classes).

    The output is rotation-major: rows ``[0, C)`` are the originals, ``[C, 2C)`` rotated
    by 90 degrees, then 180, then 270, so the original class indices stay valid. Apply
    it *after* splitting, so rotated copies of test classes never leak into training.

    Args:
        images: ``[C, D, H, W]`` with ``H == W`` (NumPy or JAX; the type is preserved).

    Returns:
        ``[4C, D, H, W]`` array of the same kind as ``images``.

    Example:
        >>> class_expansion(np.zeros((3, 20, 28, 28))).shape
        (12, 20, 28, 28)
    """
    if images.ndim != 4 or images.shape[2] != images.shape[3]:
        raise ValueError("class_expansion needs [C, D, H, H] images, got shape "
                         f"{tuple(images.shape)}")
    xp = np if isinstance(images, np.ndarray) else jnp
    return xp.concatenate([xp.rot90(images, k, axes=(2, 3)) for k in range(4)], axis=0)
