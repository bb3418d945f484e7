"""Omniglot from a prepared TensorFlow Datasets (TFDS) ``omniglot``, without TensorFlow.

``tfds.data_source`` reads TFDS's ``array_record`` files by random access with no
TensorFlow. This module maps TFDS's ``omniglot`` (``train`` = ``images_background``, ``test`` =
``images_evaluation``; features ``image`` 105x105x3, ``alphabet``, ``alphabet_char_id``)
onto :mod:`maml_jax.data.omniglot`'s arrays: the same ``[1623, 20, S, S]`` float32 layout,
the same class order and names (``background/<alphabet>/characterNN``, background
first), the same conversion (grey, LANCZOS resize, 1.0 for paper), so
:func:`~maml_jax.data.omniglot.split_classes` and every config work unchanged.

Why TFDS is an optional extra (``pip install ".[tfds]"``): it is about 230 MB of
dependencies (mostly pyarrow) that the zip loader does not need, and *building* its
``omniglot`` needs TensorFlow (its builder lists files with ``tf.io.gfile``); reading a
prepared one does not. Two facts of TFDS's data shape this module:

* TFDS keeps no file names, so a character's 20 drawings cannot be put in the drawers'
  order that the zip loader uses. They come in a canonical order here (sorted by their
  pixels): each class holds exactly the zip loader's 20 drawings, but drawing ``d`` may be
  another drawer's. Training is unaffected (episodes draw random drawings); the fixed
  evaluation tasks pick other drawings than from the zips, so numbers from the two
  sources agree statistically, not task by task.
* Without TensorFlow the 1-bit PNGs decode to {0, 1} (through ``tf.data`` to {0, 255}):
  both are read as "nonzero = paper".

Usage (with a prepared TFDS ``omniglot`` under ``~/tensorflow_datasets``)::

    data = load_tfds_omniglot("~/tensorflow_datasets")
    data.images.shape       # (1623, 20, 28, 28)
"""

from __future__ import annotations

import os
import pathlib

import numpy as np
from PIL import Image

from maml_jax.data.omniglot import DRAWINGS_PER_CLASS, OmniglotData, _grey_drawing

__all__ = ["SPLIT_ARCHIVES", "TFDS_EXTRA", "TfdsOmniglotError", "load_tfds_omniglot"]

#: TFDS split -> the class-name prefix of the archive it was built from (the zip loader's
#: order: images_background, then images_evaluation).
SPLIT_ARCHIVES = (("train", "background"), ("test", "evaluation"))
TFDS_EXTRA = 'pip install "tensorflow-datasets>=4.9.10" (or pip install ".[tfds]")'


class TfdsOmniglotError(ValueError):
    """TFDS is missing, or the prepared ``omniglot`` is missing or malformed."""


def _import_tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError as err:
        raise TfdsOmniglotError(f"data='tfds' needs TensorFlow Datasets: {TFDS_EXTRA} "
                                f"({err})") from None
    return tfds


def _builder_dir(data_dir: pathlib.Path, version: str | None) -> pathlib.Path:
    root = data_dir / "omniglot"
    versions = sorted((p for p in root.glob("*") if (p / "dataset_info.json").is_file()),
                      key=lambda p: tuple(int(x) for x in p.name.split(".") if x.isdigit()))
    if version is not None:
        versions = [p for p in versions if p.name == version]
    if not versions:
        raise TfdsOmniglotError(
            f"no prepared TFDS omniglot{'' if version is None else ' ' + version} under {root} "
            "(expected omniglot/<version>/dataset_info.json with array_record files). Prepare it "
            "where TensorFlow is installed (tfds.builder('omniglot', file_format='array_record')"
            ".download_and_prepare()), or use data='omniglot', which reads the zips")
    return versions[-1]


def _to_drawing(raw: np.ndarray, image_size: int) -> np.ndarray:
    # The zip loader's path after PNG decoding: 8-bit grey (paper 255, ink 0), resized by
    # the same function.
    grey = Image.fromarray(np.where(raw > 0, 255, 0).astype(np.uint8), mode="L")
    return _grey_drawing(grey, image_size)


def load_tfds_omniglot(data_dir: str | os.PathLike | None = None, *, image_size: int = 28,
                       version: str | None = None) -> OmniglotData:
    """All Omniglot classes from a prepared TFDS ``omniglot``, as the zip loader gives them.

    Args:
        data_dir: TFDS data folder holding ``omniglot/<version>/`` (default
            ``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets``).
        image_size: Side of the square images (105 keeps the originals).
        version: A TFDS version such as ``"3.0.0"`` (default: the newest prepared).

    Returns:
        :class:`~maml_jax.data.omniglot.OmniglotData`: float32 ``[C, 20, S, S]`` in [0, 1]
        and the class names (drawings in a canonical order; see the module docstring).

    Raises:
        TfdsOmniglotError: TFDS not installed, no prepared dataset, or a character without
            exactly 20 drawings.
    """
    tfds = _import_tfds()
    if data_dir is None:
        data_dir = os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets")
    builder = tfds.builder_from_directory(str(_builder_dir(pathlib.Path(data_dir).expanduser(),
                                                           version)))
    alphabets = builder.info.features["alphabet"].names
    source = builder.as_data_source()
    names, classes = [], []
    for split, prefix in SPLIT_ARCHIVES:
        if split not in source:
            raise TfdsOmniglotError(f"the prepared TFDS omniglot has no {split!r} split")
        records = source[split]
        groups: dict[tuple[str, int], list[np.ndarray]] = {}
        for i in range(len(records)):
            ex = records[i]
            key = (alphabets[int(ex["alphabet"])], int(ex["alphabet_char_id"]))
            groups.setdefault(key, []).append(_to_drawing(np.asarray(ex["image"])[..., 0],
                                                          image_size))
        for (alphabet, char_id) in sorted(groups):
            drawings = groups[(alphabet, char_id)]
            if len(drawings) != DRAWINGS_PER_CLASS:
                raise TfdsOmniglotError(f"{prefix}/{alphabet}/character{char_id + 1:02d} has "
                                        f"{len(drawings)} drawings, expected {DRAWINGS_PER_CLASS}")
            classes.append(np.stack(sorted(drawings, key=lambda d: d.tobytes())))
            names.append(f"{prefix}/{alphabet}/character{char_id + 1:02d}")
    images = np.stack(classes).astype(np.float32) / np.float32(255.0)
    return OmniglotData(images=images, class_names=names)
