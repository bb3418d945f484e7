"""The experiments' data: a config's images and class splits, fixed evaluation tasks.

``load_images(cfg, data_dir)`` returns the images of ``cfg["data"]`` (Omniglot, synthetic
glyphs, a TFDS Omniglot, mini-ImageNet or an image folder) with their train / val / test
class indices; ``check_task_requests`` fails before anything compiles for tasks a split
cannot provide; ``fixed_eval_tasks`` draws a config's fixed validation or test tasks.

Example:
    >>> from experiments.config_lib import mamlpp_config, validate_config
    >>> cfg = validate_config(mamlpp_config(5, 1, data="synthetic", synthetic_num_classes=30,
    ...                                     synthetic_counts=(20, 5, 5)))
    >>> images, splits = load_images(cfg, None)
    >>> images.shape, len(splits["train"])
    ((30, 20, 28, 28), 20)
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from experiments.config_lib import ConfigError
from maml_jax import parallel
from maml_jax.data import episodes, image_folder, miniimagenet, omniglot, tfds_omniglot

__all__ = ["DataError", "synthetic_images", "load_images", "select_classes", "device_images",
           "images_nbytes", "check_task_requests", "fixed_eval_tasks"]


class DataError(RuntimeError):
    """The data could not be found or loaded (message names --data-dir and the env var)."""


# ------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------

def synthetic_images(num_classes: int, image_size: int = 28, seed: int = 0,
                     drawings: int = omniglot.DRAWINGS_PER_CLASS) -> np.ndarray:
    """Learnable stand-in for Omniglot: ``[C, 20, S, S]`` float32 in [0, 1].

    Each class is a random blocky glyph (ink 0 on paper 1); each drawing shifts it by up
    to one pixel and flips 3% of the pixels, so classes are distinct but not trivial.
    """
    rs = np.random.RandomState(seed)
    cells = max(1, image_size // 4)
    glyph = rs.rand(num_classes, cells, cells) < 0.35
    glyph = np.kron(glyph, np.ones((4, 4), bool))[:, :image_size, :image_size]
    pad = image_size - glyph.shape[1]
    glyph = np.pad(glyph, ((0, 0), (0, pad), (0, pad)))
    out = np.empty((num_classes, drawings, image_size, image_size), np.float32)
    for c in range(num_classes):
        for d in range(drawings):
            g = np.roll(glyph[c], (rs.randint(-1, 2), rs.randint(-1, 2)), axis=(0, 1))
            g = g ^ (rs.rand(image_size, image_size) < 0.03)
            out[c, d] = 1.0 - g.astype(np.float32)
    return out


def load_images(cfg: dict, data_dir: str | None) -> tuple[Any, dict[str, np.ndarray]]:
    """Returns ``(images, {'train','val','test'} class indices)``.

    ``images``: Omniglot and synthetic glyphs as float32 ``[C, 20, S, S]``; image datasets
    as :class:`~maml_jax.data.episodes.ClassImages` (``uint8``, normalised on the device
    with the training split's statistics). Index classes with :func:`select_classes`.
    """
    if cfg["data"] == "sinusoid":   # its tasks are drawn on the device from a key
        raise ConfigError("data='sinusoid' has no images to load: train it with "
                          "python -m experiments.sinusoid or a study grid")
    if cfg["data"] in ("miniimagenet", "image_folder"):
        return _load_image_dataset(cfg, data_dir)
    if cfg["data"] == "synthetic":
        images = synthetic_images(cfg["synthetic_num_classes"], cfg["image_size"],
                                  cfg["synthetic_seed"])
        splits = omniglot.split_classes(cfg["synthetic_num_classes"], preset="custom",
                                        seed=cfg["split_seed"], counts=cfg["synthetic_counts"])
        return images, splits
    # TFDS's data folder (default $TFDS_DATA_DIR or ~/tensorflow_datasets)
    if cfg["data"] == "tfds":
        try:
            data = tfds_omniglot.load_tfds_omniglot(data_dir, image_size=cfg["image_size"])
        except tfds_omniglot.TfdsOmniglotError as err:
            raise DataError(f"{err} (--data-dir DIR names the TFDS data folder)") from None
        return data.images, omniglot.split_classes(len(data.class_names), preset=cfg["split"],
                                                   seed=cfg["split_seed"])
    root = omniglot.resolve_data_dir(data_dir)
    try:
        # Missing archives are downloaded (official URLs, verified) where the network
        # allows; without network this fails at once with a message naming the flag.
        data = omniglot.load_omniglot(root, image_size=cfg["image_size"], download=True)
    except omniglot.OmniglotNotFoundError as err:
        raise DataError(
            f"Omniglot data not found in {root}. Pass the directory holding "
            f"images_background.zip and images_evaluation.zip with --data-dir DIR or set "
            f"the {omniglot.DATA_DIR_ENV_VAR} environment variable. ({err})") from None
    except omniglot.OmniglotArchiveError as err:
        raise DataError(f"Omniglot archives in {root} are damaged: {err}") from None
    splits = omniglot.split_classes(len(data.class_names), preset=cfg["split"],
                                    seed=cfg["split_seed"])
    return data.images, splits


def _load_image_dataset(cfg: dict, data_dir: str | None):
    kind = cfg["data"]
    if data_dir is None:
        layout = miniimagenet.LAYOUTS if kind == "miniimagenet" else (
            "ROOT/{train,val,test}/<class>/<image> or ROOT/<class>/<image>")
        raise DataError(f"data={kind!r} cannot be downloaded: pass --data-dir DIR, the folder "
                        f"holding {layout}")
    try:
        if kind == "miniimagenet":
            ds = miniimagenet.load_miniimagenet(data_dir, image_size=cfg["image_size"],
                                                resize=cfg["image_resize"],
                                                strict=cfg["dataset_strict"])
        else:
            ds = image_folder.load_image_folder(
                data_dir, image_size=cfg["image_size"], channels=cfg["image_channels"],
                resize=cfg["image_resize"], split_fractions=cfg["split_fractions"],
                split_counts=cfg["split_counts"], seed=cfg["split_seed"])
        # Before anything compiles: a class too small for K + Q is named with its folder.
        for split, q in (("train", cfg["q_query"]), ("val", cfg["q_query_eval"]),
                         ("test", cfg["q_query_eval"])):
            image_folder.check_split_request(ds, split, cfg["num_ways"], cfg["k_shot"], q)
    except image_folder.DatasetError as err:
        raise DataError(str(err)) from None
    return ds.data, ds.splits


def select_classes(images, classes: np.ndarray):
    """The classes ``classes`` of :func:`load_images`'s images (array or ClassImages)."""
    return images.take(classes) if isinstance(images, episodes.ClassImages) else images[classes]


def device_images(images):
    """Image datasets as float32 where that fits a quarter of the device's memory (no
    per-episode scaling), else ``uint8``; Omniglot's float arrays unchanged."""
    if isinstance(images, episodes.ClassImages) and images.images.dtype == np.uint8:
        limit = parallel.device_memory_limit()
        if limit is not None and 4 * images.images.size <= limit // 4:
            return images.as_float()
    return images


def images_nbytes(images) -> int:
    """Bytes of an images array or ClassImages."""
    return int(sum(x.nbytes for x in jax.tree.leaves(images)))


def check_task_requests(cfg: dict, splits: dict[str, np.ndarray], images=None) -> None:
    """Fails fast (ConfigError) for tasks a split cannot provide."""
    requests = (("train", cfg["q_query"]), ("val", cfg["q_query_eval"]),
                ("test", cfg["q_query_eval"]))
    for name, q in requests:
        if isinstance(images, episodes.ClassImages):
            drawings = int(np.min(np.asarray(images.counts)[splits[name]]))
        elif images is not None:
            drawings = int(np.shape(images)[1])
        else:
            drawings = omniglot.DRAWINGS_PER_CLASS
        try:
            episodes.validate_task_spec(len(splits[name]), cfg["num_ways"], cfg["k_shot"], q,
                                        drawings, split_name=name)
        except ValueError as err:
            raise ConfigError(f"bad task request: {err}") from None


def fixed_eval_tasks(images: jax.Array, cfg: dict, split: str):
    """The config's fixed val or test tasks as ``((xs, ys), (xq, yq))``."""
    num = cfg["num_val_tasks"] if split == "val" else cfg["num_test_tasks"]
    seed = cfg["val_seed"] if split == "val" else cfg["test_seed"]
    xs, ys, xq, yq = episodes.fixed_tasks(images, num_ways=cfg["num_ways"], k_shot=cfg["k_shot"],
                                          q_query=cfg["q_query_eval"], num_tasks=num, seed=seed,
                                          split_name=split)
    return (xs, ys), (xq, yq)
