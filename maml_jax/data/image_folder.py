"""Image-folder datasets: any few-shot dataset stored as one folder per class.

Two layouts are read:

* pre-split: ``ROOT/train/<class>/<image>``, ``ROOT/val/<class>/<image>``,
  ``ROOT/test/<class>/<image>``;
* flat: ``ROOT/<class>/<image>``, with the classes split by a seeded permutation into
  train / val / test, given as fractions (``(0.64, 0.16, 0.2)``) or counts
  (``(64, 16, 20)``).

Images (``.jpg``, ``.jpeg``, ``.png``, ``.bmp``, ``.gif``, ``.webp``) are decoded once, in
parallel threads (Pillow releases the GIL while decoding), converted to RGB or grey, and
cached as one ``uint8`` array ``[C, D, S, S, ch]`` (classes padded to the largest one, with
``counts``) beside the data, or in the per-user cache where the data folder is read-only.
The cache key hashes the file list with each file's size and modification time, the
class split and the decoding options: re-reading every byte to hash contents would cost as
much as decoding. The result is a :class:`maml_jax.data.episodes.ClassImages` that stays
``uint8`` on the device; its per-channel mean and std are the training split's and are
applied inside the jitted sampler.

An image whose size differs from ``image_size`` is an error unless ``resize=True``
(bilinear), so a dataset is never silently rescaled.

Example (a flat folder of 8 classes with 3 grey 16x16 images each, split 4 / 2 / 2):
    >>> import pathlib, tempfile
    >>> import jax
    >>> from PIL import Image
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for c in range(8):
    ...     (root / f"class{c}").mkdir()
    ...     for i in range(3):
    ...         Image.new("L", (16, 16), 30 * c + i).save(root / f"class{c}" / f"{i}.png")
    >>> ds = load_image_folder(root, image_size=16, channels=1, split_counts=(4, 2, 2))
    >>> [len(ds.splits[s]) for s in ("train", "val", "test")]
    [4, 2, 2]
    >>> train = ds.data.take(ds.splits["train"])
    >>> xs, ys, xq, yq = episodes.sample_task(jax.random.PRNGKey(0), train, 4, 1, 2)
    >>> xs.shape, xq.shape
    ((4, 16, 16, 1), (8, 16, 16, 1))
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
from PIL import Image

from maml_jax.data import disk_cache, episodes

__all__ = [
    "IMAGE_SUFFIXES",
    "SPLITS",
    "DatasetError",
    "ImageDataset",
    "check_split_request",
    "decode_image",
    "default_cache_dir",
    "load_classes",
    "load_image_folder",
    "split_class_names",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
SPLITS = ("train", "val", "test")
# Bump whenever the cached array's meaning changes, so stale caches are never read.
_CACHE_FORMAT_VERSION = 1

_LAYOUTS = ("ROOT/train/<class>/<image>, ROOT/val/<class>/<image> and ROOT/test/<class>/<image>"
            ", or ROOT/<class>/<image> with a class split (fractions or counts)")


class DatasetError(ValueError):
    """A dataset is missing or malformed; the message names the path and the layout."""


class ImageDataset(NamedTuple):
    """A decoded image dataset.

    Attributes:
        data: Every class, ``uint8`` on the host, normalised with the train split's
            statistics (:class:`~maml_jax.data.episodes.ClassImages`).
        class_names: Class names (folder names or labels), in ``data``'s order.
        splits: ``{"train", "val", "test"}`` -> class indices into ``data``.
        class_dirs: Where each class's images came from (for error messages).
    """

    data: episodes.ClassImages
    class_names: tuple[str, ...]
    splits: dict[str, np.ndarray]
    class_dirs: tuple[str, ...]


def _images_in(folder: pathlib.Path) -> list[pathlib.Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _class_folders(folder: pathlib.Path) -> dict[str, list[pathlib.Path]]:
    classes = {}
    for d in sorted(p for p in folder.iterdir() if p.is_dir()):
        files = _images_in(d)
        if not files:
            raise DatasetError(f"class folder {d} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        classes[d.name] = files
    return classes


def split_class_names(names: Sequence[str], *, fractions: Sequence[float] | None = None,
                      counts: Sequence[int] | None = None, seed: int = 0) -> dict[str, list[str]]:
    """Splits class names into train / val / test by a seeded permutation.

    Args:
        names: All class names (sorted order is used, so the split depends only on the
            set of names and the seed).
        fractions: Three fractions summing to 1 (counts rounded, the remainder to train).
        counts: Three class counts summing to at most ``len(names)``.
        seed: Seed of the permutation.

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``.

    Example:
        >>> s = split_class_names([f"c{i}" for i in range(10)], counts=(6, 2, 2))
        >>> [len(s[k]) for k in ("train", "val", "test")]
        [6, 2, 2]
    """
    if (fractions is None) == (counts is None):
        raise DatasetError("a flat ROOT/<class>/<image> folder needs exactly one of "
                           "split_fractions or split_counts (train, val, test)")
    names = sorted(names)
    n = len(names)
    if fractions is not None:
        f = [float(x) for x in fractions]
        if len(f) != 3 or min(f) < 0 or abs(sum(f) - 1.0) > 1e-6:
            raise DatasetError(f"split_fractions must be 3 non-negative numbers summing to 1, got "
                               f"{tuple(fractions)}")
        val, test = round(f[1] * n), round(f[2] * n)
        counts = (n - val - test, val, test)
    counts = [int(c) for c in counts]
    if len(counts) != 3 or min(counts) < 1 or sum(counts) > n:
        raise DatasetError(f"split counts {tuple(counts)} need 3 positive counts summing to "
                           f"at most the {n} classes found")
    order = np.random.default_rng(seed).permutation(n)
    bounds = np.cumsum([0, *counts])
    return {s: [names[i] for i in sorted(order[bounds[j]:bounds[j + 1]])]
            for j, s in enumerate(SPLITS)}


def decode_image(path: pathlib.Path, image_size: int, channels: int, resize: bool) -> np.ndarray:
    """One image as ``uint8 [S, S, channels]`` (RGB or grey).

    Raises:
        DatasetError: If the file cannot be decoded, or its size is not ``S x S`` and
            ``resize`` is False.
    """
    try:
        with Image.open(path) as opened:
            im = opened.convert("RGB" if channels == 3 else "L")
            if im.size != (image_size, image_size):
                if not resize:
                    raise DatasetError(
                        f"{path}: image is {im.size[0]}x{im.size[1]} pixels, the config asks for "
                        f"{image_size}x{image_size}; resize the data, or pass resize=True "
                        "(config image_resize=True) to resize on load")
                im = im.resize((image_size, image_size), Image.BILINEAR)
            arr = np.asarray(im, np.uint8)
    except DatasetError:
        raise
    except Exception as err:  # Pillow raises many types for bad files
        raise DatasetError(f"cannot read image {path}: {err}") from None
    return arr.reshape(image_size, image_size, channels)


def _cache_key(classes: Mapping[str, Sequence[pathlib.Path]], splits: Mapping[str, list[str]],
               image_size: int, channels: int, resize: bool) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"v": _CACHE_FORMAT_VERSION, "size": image_size, "ch": channels,
                         "resize": resize, "splits": splits}, sort_keys=True).encode())
    for name, files in classes.items():
        for p in files:
            st = p.stat()
            h.update(f"{name}/{p.name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def default_cache_dir(root: pathlib.Path) -> pathlib.Path:
    """``root`` where a cache may be written there, else a per-user folder for ``root``."""
    if disk_cache.dir_is_writable(root):
        return root
    return disk_cache.user_cache_dir(
        "image_folder", hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:12])


def load_classes(classes: Mapping[str, Sequence[pathlib.Path]], splits: Mapping[str, list[str]], *,
                 image_size: int, channels: int = 3, resize: bool = False,
                 cache_dir: pathlib.Path | None = None, workers: int | None = None,
                 class_dirs: Mapping[str, str] | None = None) -> ImageDataset:
    """Decodes (or reads from the cache) classes of image files into an :class:`ImageDataset`.

    Args:
        classes: Class name -> image files, in the order the classes should have.
        splits: ``{"train", "val", "test"}`` -> class names (disjoint).
        image_size: Side ``S`` of the square images.
        channels: 3 (RGB) or 1 (grey).
        resize: Resize images of another size (bilinear) instead of failing.
        cache_dir: Where the decoded ``.npy`` cache lives (None: no cache).
        workers: Decoding threads (default: ``min(32, 2 * cpus)``).
        class_dirs: Class name -> folder, for messages (default: each class's first
            file's folder).

    Returns:
        The dataset; ``data.mean``/``data.std`` are the train split's statistics.
    """
    if channels not in (1, 3):
        raise DatasetError(f"channels must be 1 or 3, got {channels}")
    seen = [n for s in SPLITS for n in splits.get(s, [])]
    if set(splits) != set(SPLITS) or len(seen) != len(set(seen)):
        raise DatasetError(f"splits must be disjoint train / val / test, got {sorted(splits)}")
    missing = sorted(set(seen) - set(classes))
    if missing:
        raise DatasetError(f"split classes without images: {missing[:5]}")
    names = [n for n in classes if n in set(seen)]
    index = {n: i for i, n in enumerate(names)}
    counts = np.array([len(classes[n]) for n in names], np.int32)
    shape = (len(names), int(counts.max()), image_size, image_size, channels)
    images = None
    if cache_dir is not None:
        cache_dir = pathlib.Path(cache_dir)
        cache_dir.mkdir(parents=True, exist_ok=True)
        key = _cache_key({n: classes[n] for n in names}, {s: list(splits[s]) for s in SPLITS},
                         image_size, channels, resize)
        npy = cache_dir / f"images_{image_size}px_{channels}ch_{key}.npy"
        if npy.is_file():
            try:
                cached = np.load(npy, mmap_mode="r")
                if cached.shape == shape and cached.dtype == np.uint8:
                    images = np.ascontiguousarray(cached)
            except (OSError, ValueError):
                images = None  # a damaged cache is decoded again
    if images is None:
        images = np.zeros(shape, np.uint8)
        jobs = [(i, j, p) for i, n in enumerate(names) for j, p in enumerate(classes[n])]
        workers = workers or min(32, 2 * (os.cpu_count() or 1))
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            decoded = pool.map(lambda job: decode_image(job[2], image_size, channels, resize), jobs)
            for (i, j, _), arr in zip(jobs, decoded, strict=True):
                images[i, j] = arr
        if cache_dir is not None:
            disk_cache.atomic_write(npy, lambda f: np.save(f, images, allow_pickle=False))
    train = np.array([index[n] for n in splits["train"]], np.int64)
    mean, std = episodes.channel_stats(images[train], counts[train])
    dirs = class_dirs or {n: str(pathlib.Path(classes[n][0]).parent) for n in names}
    return ImageDataset(episodes.ClassImages(images, counts, mean, std), tuple(names),
                        {s: np.array([index[n] for n in splits[s]], np.int64) for s in SPLITS},
                        tuple(dirs[n] for n in names))


def load_image_folder(root: str | os.PathLike, *, image_size: int, channels: int = 3,
                      resize: bool = False, split_fractions: Sequence[float] | None = None,
                      split_counts: Sequence[int] | None = None, seed: int = 0,
                      cache_dir: str | os.PathLike | None = None,
                      workers: int | None = None) -> ImageDataset:
    """Loads ``ROOT/<split>/<class>/<image>`` or ``ROOT/<class>/<image>`` (module docstring).

    Args:
        root: The dataset folder.
        image_size: Side ``S`` of the square images.
        channels: 3 (RGB) or 1 (grey).
        resize: Resize images of another size instead of failing.
        split_fractions: Flat layout: train / val / test fractions of the classes.
        split_counts: Flat layout: train / val / test class counts.
        seed: Seed of the flat layout's class split.
        cache_dir: Decoded cache folder (default: ``root`` if writable, else the per-user
            cache).
        workers: Decoding threads.

    Returns:
        The :class:`ImageDataset`.

    Raises:
        DatasetError: A missing folder, an unknown layout, a class folder without images,
            an unreadable image, or an image of the wrong size (naming the path).
    """
    root = pathlib.Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist; expected {_LAYOUTS}")
    present = [s for s in SPLITS if (root / s).is_dir()]
    if present:
        if len(present) != 3:
            raise DatasetError(f"{root} has {present} but not all of train/, val/ and test/; "
                               f"expected {_LAYOUTS}")
        if split_fractions is not None or split_counts is not None:
            raise DatasetError(f"{root} is already split into train/val/test; drop split_fractions "
                               "/ split_counts")
        classes, splits, dirs = {}, {}, {}
        for s in SPLITS:
            folders = _class_folders(root / s)
            if not folders:
                raise DatasetError(f"{root / s} holds no class folders; expected {_LAYOUTS}")
            for name, files in folders.items():
                key = f"{s}/{name}"  # a class name may repeat across splits in the wild
                classes[key], dirs[key] = files, str(root / s / name)
            splits[s] = [f"{s}/{n}" for n in folders]
    else:
        folders = _class_folders(root)
        if not folders:
            raise DatasetError(f"{root} holds no class folders; expected {_LAYOUTS}")
        classes, dirs = folders, {n: str(root / n) for n in folders}
        splits = split_class_names(list(folders), fractions=split_fractions, counts=split_counts,
                                   seed=seed)
    cache = default_cache_dir(root) if cache_dir is None else pathlib.Path(cache_dir)
    return load_classes(classes, splits, image_size=image_size, channels=channels, resize=resize,
                        cache_dir=cache, workers=workers, class_dirs=dirs)


def check_split_request(dataset: ImageDataset, split: str, num_ways: int, k_shot: int,
                        q_query: int) -> None:
    """Fails (DatasetError) if ``split`` cannot give N-way K-shot Q-query tasks, naming the
    smallest class and its folder when it has fewer than ``K + Q`` images."""
    idx = dataset.splits[split]
    counts = np.asarray(dataset.data.counts)[idx]
    if num_ways > len(idx):
        raise DatasetError(f"asked for {num_ways}-way tasks but the {split!r} split has only "
                           f"{len(idx)} classes")
    small = int(np.argmin(counts))
    if counts[small] < k_shot + q_query:
        c = idx[small]
        raise DatasetError(
            f"class {dataset.class_names[c]!r} ({dataset.class_dirs[c]}) of the {split!r} split "
            f"has {counts[small]} images, fewer than k_shot + q_query = {k_shot + q_query}")
