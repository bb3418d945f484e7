"""maml_jax.data.image_folder: a flat folder of class folders split by the seed, ragged
classes, and errors that name the class or the file."""

from __future__ import annotations

import numpy as np
import pytest

from maml_jax.data import image_folder
from maml_jax.data.image_folder import DatasetError
from tests.support.synthetic_images import SIZE, write_image


def test_image_folder_flat_split_ragged_classes_and_errors(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "flat"
    sizes = [3, 5, 4, 6, 2, 5, 5, 3, 4, 6]
    for c, n in enumerate(sizes):
        for j in range(n):
            write_image(root / f"class{c}" / f"{j}.png", rng, mode="L")
    ds = image_folder.load_image_folder(root, image_size=SIZE, channels=1,
                                        split_counts=(6, 2, 2), seed=3)
    assert [len(ds.splits[s]) for s in ("train", "val", "test")] == [6, 2, 2]
    assert len(set(np.concatenate(list(ds.splits.values())).tolist())) == 10
    assert ds.data.images.shape == (10, 6, SIZE, SIZE, 1)
    assert [int(ds.data.counts[ds.class_names.index(f"class{c}")]) for c in range(10)] == sizes
    other = image_folder.load_image_folder(root, image_size=SIZE, channels=1,
                                           split_fractions=(0.6, 0.2, 0.2), seed=3)
    assert {s: [other.class_names[i] for i in v] for s, v in other.splits.items()} == \
        {s: [ds.class_names[i] for i in v] for s, v in ds.splits.items()}  # same seed, same split
    seeds = image_folder.load_image_folder(root, image_size=SIZE, channels=1,
                                           split_counts=(6, 2, 2), seed=4)
    assert any(sorted(seeds.class_names[i] for i in seeds.splits[s]) !=
               sorted(ds.class_names[i] for i in ds.splits[s]) for s in ("val", "test"))
    # a class with fewer images than K + Q is named with its folder
    small = min(ds.splits["train"], key=lambda i: ds.data.counts[i])
    with pytest.raises(DatasetError, match=f"class '{ds.class_names[small]}' .* has "
                                           f"{ds.data.counts[small]} images, fewer than"):
        image_folder.check_split_request(ds, "train", 2, 1, int(ds.data.counts[small]))
    with pytest.raises(DatasetError, match="asked for 5-way tasks but the 'val' split has only 2"):
        image_folder.check_split_request(ds, "val", 5, 1, 1)
    with pytest.raises(DatasetError, match="exactly one of split_fractions or split_counts"):
        image_folder.load_image_folder(root, image_size=SIZE, channels=1)
    (root / "class3" / "9.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DatasetError, match=r"cannot read image .*class3/9\.png"):
        image_folder.load_image_folder(root, image_size=SIZE, channels=1, split_counts=(6, 2, 2))
