"""Small image datasets of random pictures in the standard layouts.

mini-ImageNet cannot be downloaded here: the tests write small datasets of random JPEGs in
exactly the standard layouts (split CSV files + ``images/``; ``train/val/test/<class>/``).
"""

from __future__ import annotations

import csv
import pathlib

import numpy as np
from PIL import Image

SIZE = 16


def write_image(path: pathlib.Path, rng, size=(SIZE, SIZE), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)


def _class_names(n, prefix="n0"):
    return [f"{prefix}{i:07d}" for i in range(n)]


SPLIT_CLASSES = {"train": _class_names(6, "n01"), "val": _class_names(5, "n02"),
                 "test": _class_names(5, "n03")}


def make_miniimagenet_csv(root: pathlib.Path, per_class=6, size=(SIZE, SIZE), seed=0):
    """Ravi and Larochelle's layout: {train,val,test}.csv + images/ (random JPEGs)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for split, classes in SPLIT_CLASSES.items():
        with (root / f"{split}.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["filename", "label"])
            for c in classes:
                for j in range(per_class):
                    name = f"{c}{j:08d}.jpg"
                    write_image(root / "images" / name, rng, size)
                    w.writerow([name, c])
    return root


def make_miniimagenet_folders(csv_root: pathlib.Path, root: pathlib.Path):
    """The pre-split layout holding the same files as ``csv_root``."""
    for split in SPLIT_CLASSES:
        for row in list(csv.reader((csv_root / f"{split}.csv").open()))[1:]:
            dest = root / split / row[1] / row[0]
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes((csv_root / "images" / row[0]).read_bytes())
    return root
