"""mini-ImageNet (Vinyals et al., 2016) with Ravi and Larochelle's class split.

100 ImageNet classes of 600 images, 64 for training, 16 for validation, 20 for testing,
84x84 RGB. The images cannot be downloaded here (ImageNet's licence); bring them in one of
the two layouts in common use:

* split files: ``ROOT/train.csv``, ``ROOT/val.csv``, ``ROOT/test.csv`` with a header and
  ``filename,label`` rows (Ravi and Larochelle, 2017), and every image in ``ROOT/images/``;
* pre-split folders: ``ROOT/train/<class>/<image>``, ``ROOT/val/<class>/<image>``,
  ``ROOT/test/<class>/<image>``.

Images are decoded once and cached as ``uint8`` (:mod:`maml_jax.data.image_folder`);
``resize=True`` (the default here) resizes the original-size JPEGs of the split-file
layout to 84x84 (bilinear). ``strict=True`` checks the 64/16/20 classes of 600 images.

Example (a tiny pre-split stand-in: 2 classes per split of 3 images; ``strict=False``
admits other counts than the standard 64/16/20 classes of 600 images):
    >>> import pathlib, tempfile
    >>> import numpy as np
    >>> from PIL import Image
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for split in ("train", "val", "test"):
    ...     for c in range(2):
    ...         (root / split / f"n0{c}").mkdir(parents=True)
    ...         for i in range(3):
    ...             Image.new("RGB", (84, 84), (i, c, 9)).save(root / split / f"n0{c}" / f"{i}.png")
    >>> ds = load_miniimagenet(root, strict=False)
    >>> [len(ds.splits[s]) for s in ("train", "val", "test")], ds.data.images.shape
    ([2, 2, 2], (6, 3, 84, 84, 3))
"""

from __future__ import annotations

import csv
import os
import pathlib

from maml_jax.data import image_folder
from maml_jax.data.image_folder import DatasetError, ImageDataset

__all__ = ["CLASSES_PER_SPLIT", "IMAGES_PER_CLASS", "IMAGE_SIZE", "LAYOUTS", "load_miniimagenet",
           "read_split_file"]

CLASSES_PER_SPLIT = {"train": 64, "val": 16, "test": 20}
IMAGES_PER_CLASS = 600
IMAGE_SIZE = 84
LAYOUTS = ("ROOT/{train,val,test}.csv (header, then filename,label rows) with the images in "
           "ROOT/images/, or ROOT/{train,val,test}/<class>/<image>")


def read_split_file(path: pathlib.Path) -> dict[str, list[str]]:
    """``label -> [filenames]`` from one ``filename,label`` CSV, labels in first-seen order.

    Raises:
        DatasetError: If the file is missing, has no ``filename,label`` header or a
            malformed row (naming the file and line).
    """
    if not path.is_file():
        raise DatasetError(f"mini-ImageNet split file {path} is missing; expected {LAYOUTS}")
    out: dict[str, list[str]] = {}
    with path.open(newline="") as f:
        rows = csv.reader(f)
        header = next(rows, None)
        if header is None or [h.strip() for h in header] != ["filename", "label"]:
            raise DatasetError(f"{path}: the first line must be the header 'filename,label', got "
                               f"{header}")
        for line, row in enumerate(rows, start=2):
            if len(row) != 2 or not row[0].strip() or not row[1].strip():
                raise DatasetError(f"{path}, line {line}: expected 'filename,label', got {row}")
            out.setdefault(row[1].strip(), []).append(row[0].strip())
    if not out:
        raise DatasetError(f"{path} lists no images")
    return out


def _from_split_files(root: pathlib.Path, image_size, resize, cache_dir, workers) -> ImageDataset:
    images_dir = root / "images"
    if not images_dir.is_dir():
        raise DatasetError(f"{images_dir} is missing: the split-file layout keeps every image "
                           f"there; expected {LAYOUTS}")
    classes, splits = {}, {}
    for s in image_folder.SPLITS:
        table = read_split_file(root / f"{s}.csv")
        for label, files in table.items():
            if label in classes:
                raise DatasetError(f"class {label!r} appears in two split files")
            classes[label] = [images_dir / name for name in files]
        splits[s] = list(table)
    for files in classes.values():
        for p in files:
            if not p.is_file():
                raise DatasetError(f"{p} is listed in a split file but missing from {images_dir}")
    cache = image_folder.default_cache_dir(root) if cache_dir is None else cache_dir
    return image_folder.load_classes(
        classes, splits, image_size=image_size, channels=3, resize=resize, cache_dir=cache,
        workers=workers, class_dirs={c: str(images_dir) for c in classes})


def load_miniimagenet(root: str | os.PathLike, *, image_size: int = IMAGE_SIZE,
                      resize: bool = True, strict: bool = True,
                      cache_dir: str | os.PathLike | None = None,
                      workers: int | None = None) -> ImageDataset:
    """Loads mini-ImageNet from either layout (module docstring).

    Args:
        root: The dataset folder.
        image_size: Side of the square images (84 in the papers).
        resize: Resize images of another size (bilinear) instead of failing.
        strict: Check the standard 64/16/20 classes of 600 images each.
        cache_dir: Decoded cache folder (default: ``root`` if writable, else per user).
        workers: Decoding threads.

    Returns:
        An :class:`~maml_jax.data.image_folder.ImageDataset` (uint8, train statistics).

    Raises:
        DatasetError: Naming the expected layouts and the offending path.
    """
    root = pathlib.Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"mini-ImageNet folder {root} does not exist; expected {LAYOUTS}")
    csvs = [s for s in image_folder.SPLITS if (root / f"{s}.csv").is_file()]
    if csvs:
        ds = _from_split_files(root, image_size, resize, cache_dir, workers)
    elif all((root / s).is_dir() for s in image_folder.SPLITS):
        ds = image_folder.load_image_folder(root, image_size=image_size, channels=3,
                                            resize=resize, cache_dir=cache_dir, workers=workers)
    else:
        raise DatasetError(f"{root} is not a mini-ImageNet folder: found neither split files nor "
                           f"train/val/test folders; expected {LAYOUTS}")
    if strict:
        for s, n in CLASSES_PER_SPLIT.items():
            if len(ds.splits[s]) != n:
                raise DatasetError(f"{root}: the {s!r} split has {len(ds.splits[s])} classes, "
                                   f"mini-ImageNet has {n} (strict=False accepts other sizes)")
        odd = [ds.class_names[i] for i, c in enumerate(ds.data.counts) if c != IMAGES_PER_CLASS]
        if odd:
            raise DatasetError(f"{root}: classes {odd[:5]} do not have {IMAGES_PER_CLASS} images "
                               "(strict=False accepts them)")
    return ds
