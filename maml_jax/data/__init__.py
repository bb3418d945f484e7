"""Data: one on-device episode sampler and one small module per source.

* :mod:`~maml_jax.data.episodes`: N-way K-shot Q-query tasks sampled under ``jit`` from
  one split's classes (float arrays, or ``uint8`` :class:`~maml_jax.data.episodes.ClassImages`
  normalised on the device), per-class rotations, fixed evaluation tasks.
* :mod:`~maml_jax.data.omniglot`: the official Omniglot zips (decode, cache, class splits).
* :mod:`~maml_jax.data.image_folder`: any ``ROOT/[<split>/]<class>/<image>`` dataset.
* :mod:`~maml_jax.data.miniimagenet`: mini-ImageNet, Ravi and Larochelle's split files or
  pre-split folders.
* :mod:`~maml_jax.data.tfds_omniglot`: Omniglot from a prepared TFDS ``omniglot``
  (optional extra ``tfds``; TensorFlow is not needed to read it).
* :mod:`~maml_jax.data.sinusoid`: the sinusoid regression family (no files).
* :mod:`~maml_jax.data.gaussian_clusters`: a few-shot classification family of Gaussian
  clusters (no files).
* :mod:`~maml_jax.data.disk_cache`: where and how the loaders write their caches.

A new image dataset is a function that lists its classes and files and calls
:func:`~maml_jax.data.image_folder.load_classes`.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from maml_jax.data import episodes
    >>> xs, ys, xq, yq = episodes.sample_task(jax.random.PRNGKey(0), jnp.zeros((10, 20, 28, 28)),
    ...                                       5, 1, 1)
    >>> xs.shape, ys.shape
    ((5, 28, 28, 1), (5,))
"""

# Submodules are imported on use (``from maml_jax.data import omniglot``), not here:
# ``import maml_jax`` needs the sinusoid family only, and must not need Pillow or TFDS.
__all__ = ["disk_cache", "episodes", "gaussian_clusters", "image_folder", "miniimagenet",
           "omniglot", "sinusoid", "tfds_omniglot"]
