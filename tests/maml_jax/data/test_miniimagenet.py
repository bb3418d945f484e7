"""maml_jax.data.miniimagenet: its two layouts (split CSV files + ``images/``; pre-split
class folders) give the same images, the uint8 cache, the training split's normalisation,
and errors that name the layout and the path (random JPEGs in the standard layouts:
``tests/support/synthetic_images.py``)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from maml_jax.data import miniimagenet
from maml_jax.data.image_folder import DatasetError
from tests.support.synthetic_images import (
    SIZE,
    SPLIT_CLASSES,
    make_miniimagenet_csv,
    make_miniimagenet_folders,
    write_image,
)


def test_miniimagenet_layouts_agree_and_cache(mini_csv, tmp_path):
    ds = miniimagenet.load_miniimagenet(mini_csv, image_size=SIZE, strict=False)
    assert [len(ds.splits[s]) for s in ("train", "val", "test")] == [6, 5, 5]
    idx = np.concatenate([ds.splits[s] for s in ("train", "val", "test")])
    assert sorted(idx.tolist()) == list(range(16))          # disjoint, covering
    assert [ds.class_names[i] for i in ds.splits["val"]] == SPLIT_CLASSES["val"]
    assert ds.data.images.dtype == np.uint8 and ds.data.images.shape == (16, 6, SIZE, SIZE, 3)
    assert list(ds.data.counts) == [6] * 16
    # the decoded pixels are the JPEG's own (decoded independently here)
    first = ds.class_names.index(SPLIT_CLASSES["test"][2])
    name = f"{SPLIT_CLASSES['test'][2]}{3:08d}.jpg"
    ref = np.asarray(Image.open(mini_csv / "images" / name).convert("RGB"))
    np.testing.assert_array_equal(ds.data.images[first, 3], ref)
    # normalisation statistics: the training split's, per channel
    train = ds.data.images[ds.splits["train"]].reshape(-1, 3) / 255.0
    np.testing.assert_allclose(ds.data.mean, train.mean(0), rtol=1e-5)
    np.testing.assert_allclose(ds.data.std, train.std(0), rtol=1e-4)
    # a second load reads the uint8 cache (beside the data) and gives the same arrays
    caches = list(mini_csv.glob("images_*px_3ch_*.npy"))
    assert len(caches) == 1
    again = miniimagenet.load_miniimagenet(mini_csv, image_size=SIZE, strict=False)
    np.testing.assert_array_equal(again.data.images, ds.data.images)
    # the pre-split folder layout of the same files: the same images per class name
    folders = miniimagenet.load_miniimagenet(make_miniimagenet_folders(mini_csv, tmp_path / "f"),
                                             image_size=SIZE, strict=False)
    for s in ("train", "val", "test"):
        for i in folders.splits[s]:
            j = ds.class_names.index(folders.class_names[i].split("/", 1)[1])
            np.testing.assert_array_equal(folders.data.images[i], ds.data.images[j])
    with pytest.raises(DatasetError, match="has 6 classes, mini-ImageNet has 64"):
        miniimagenet.load_miniimagenet(mini_csv, image_size=SIZE)   # strict by default


def test_miniimagenet_errors_name_the_layout_and_path(mini_csv, tmp_path):
    with pytest.raises(DatasetError, match=r"does not exist.*train,val,test"):
        miniimagenet.load_miniimagenet(tmp_path / "nothing", image_size=SIZE)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="neither split files nor"):
        miniimagenet.load_miniimagenet(tmp_path / "empty", image_size=SIZE)
    broken = tmp_path / "broken"
    broken.mkdir()
    for s in ("train", "val"):
        (broken / f"{s}.csv").write_text((mini_csv / f"{s}.csv").read_text())
    (broken / "images").symlink_to(mini_csv / "images")
    with pytest.raises(DatasetError, match=r"test\.csv is missing"):
        miniimagenet.load_miniimagenet(broken, image_size=SIZE, strict=False)
    (broken / "test.csv").write_text("file,class\nx.jpg,n0\n")
    with pytest.raises(DatasetError, match="header 'filename,label'"):
        miniimagenet.load_miniimagenet(broken, image_size=SIZE, strict=False)
    (broken / "test.csv").write_text("filename,label\nmissing.jpg,n09\n")
    with pytest.raises(DatasetError, match=r"missing\.jpg is listed"):
        miniimagenet.load_miniimagenet(broken, image_size=SIZE, strict=False)
    # unreadable image, and an image of another size without resize
    bad = make_miniimagenet_csv(tmp_path / "bad", per_class=2)
    victim = sorted((bad / "images").iterdir())[5]
    victim.write_bytes(b"not a jpeg")
    with pytest.raises(DatasetError, match=f"cannot read image .*{victim.name}"):
        miniimagenet.load_miniimagenet(bad, image_size=SIZE, strict=False)
    write_image(victim, np.random.default_rng(1), size=(20, 24))
    with pytest.raises(DatasetError, match=f"{victim.name}: image is 20x24 pixels.*16x16"):
        miniimagenet.load_miniimagenet(bad, image_size=SIZE, resize=False, strict=False)
    ds = miniimagenet.load_miniimagenet(bad, image_size=SIZE, resize=True, strict=False)
    assert ds.data.images.shape[2:] == (SIZE, SIZE, 3)
