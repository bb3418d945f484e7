"""Tests of maml_jax.data beyond Omniglot: episodes on uint8 / ragged classes, image folders,
mini-ImageNet's two layouts, and the experiments' wiring (a few training steps).

mini-ImageNet cannot be downloaded here: the tests write small datasets of random JPEGs in
exactly the standard layouts (split CSV files + ``images/``; ``train/val/test/<class>/``).
"""

from __future__ import annotations

import csv
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from maml_jax.data import episodes, image_folder, miniimagenet
from maml_jax.data.image_folder import DatasetError

SIZE = 16


def _write_image(path: pathlib.Path, rng, size=(SIZE, SIZE), mode="RGB"):
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
                    _write_image(root / "images" / name, rng, size)
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


@pytest.fixture(scope="module")
def mini_csv(tmp_path_factory):
    return make_miniimagenet_csv(tmp_path_factory.mktemp("mini") / "csv")


# ---------------------------------------------------------------------------------------
# mini-ImageNet layouts, caching, normalisation
# ---------------------------------------------------------------------------------------

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
    _write_image(victim, np.random.default_rng(1), size=(20, 24))
    with pytest.raises(DatasetError, match=f"{victim.name}: image is 20x24 pixels.*16x16"):
        miniimagenet.load_miniimagenet(bad, image_size=SIZE, resize=False, strict=False)
    ds = miniimagenet.load_miniimagenet(bad, image_size=SIZE, resize=True, strict=False)
    assert ds.data.images.shape[2:] == (SIZE, SIZE, 3)


# ---------------------------------------------------------------------------------------
# image folders: flat layout split by the seed, ragged classes, errors
# ---------------------------------------------------------------------------------------

def test_image_folder_flat_split_ragged_classes_and_errors(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "flat"
    sizes = [3, 5, 4, 6, 2, 5, 5, 3, 4, 6]
    for c, n in enumerate(sizes):
        for j in range(n):
            _write_image(root / f"class{c}" / f"{j}.png", rng, mode="L")
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


# ---------------------------------------------------------------------------------------
# episodes: uint8 == float, balance, ragged draws, rotation
# ---------------------------------------------------------------------------------------

def _ragged(seed=0):
    rng = np.random.default_rng(seed)
    imgs = rng.integers(0, 256, (7, 9, SIZE, SIZE, 3), dtype=np.uint8)
    counts = np.array([9, 4, 7, 3, 9, 5, 6], np.int32)
    for c, n in enumerate(counts):
        imgs[c, n:] = 0
    mean, std = episodes.channel_stats(imgs, counts)
    return episodes.ClassImages(imgs, counts, mean, std)


def test_uint8_episodes_equal_the_float_path_balanced_and_within_counts():
    data = _ragged()
    as_float = data.as_float()
    assert as_float.images.dtype == np.float32 and not as_float.mean.any()
    key = jax.random.PRNGKey(5)
    a = episodes.sample_tasks(key, jax.device_put(data), 64, 3, 1, 2)
    b = episodes.sample_tasks(key, jax.device_put(as_float), 64, 3, 1, 2)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-5)
    xs, _ys, xq, yq = a
    assert xs.shape == (64, 3, SIZE, SIZE, 3) and xq.shape == (64, 6, SIZE, SIZE, 3)
    assert (np.asarray(yq) == np.repeat(np.arange(3), 2)).all()
    # every drawn image is a real one (never the zero padding): match each back
    real = {((img / 255.0 - data.mean) / data.std).astype(np.float32).tobytes()
            for c, n in enumerate(data.counts) for img in data.images[c, :n]}
    drawn = np.concatenate([np.asarray(xs).reshape(-1, SIZE, SIZE, 3),
                            np.asarray(xq).reshape(-1, SIZE, SIZE, 3)])
    matches = [min(np.abs(d - np.frombuffer(r, np.float32).reshape(d.shape)).max() for r in real)
               for d in drawn[:40]]
    assert max(matches) < 1e-5
    # the training-split statistics normalise the training split to mean 0, std 1
    big = np.asarray(episodes.sample_tasks(key, data, 256, 3, 1, 2)[2])
    assert abs(big.mean()) < 0.1 and abs(big.std() - 1) < 0.1
    with pytest.raises(ValueError, match="the 'train' split has only 3 drawings per class"):
        episodes.sample_tasks(key, data, 2, 3, 2, 2, split_name="train")
    with pytest.raises(ValueError, match=r"ClassImages\.mean and \.std need 3 entries"):
        episodes.sample_task(key, data._replace(mean=np.zeros(1)), 3, 1, 1)


def test_rotation_turns_each_class_as_a_whole():
    data = _ragged(1)
    key = jax.random.PRNGKey(2)
    plain = episodes.sample_task(key, data, 4, 1, 2)
    turned = episodes.sample_task(key, data, 4, 1, 2, rotate=True)
    xs, xq = np.asarray(plain[0]), np.asarray(plain[2]).reshape(4, 2, SIZE, SIZE, 3)
    rs, rq = np.asarray(turned[0]), np.asarray(turned[2]).reshape(4, 2, SIZE, SIZE, 3)
    ks = []
    for c in range(4):
        k = [k for k in range(4) if np.allclose(np.rot90(xs[c], k, axes=(0, 1)), rs[c])]
        assert len(k) == 1
        np.testing.assert_allclose(np.rot90(xq[c], k[0], axes=(1, 2)), rq[c], rtol=1e-6, atol=1e-6)
        ks.append(k[0])
    assert len(set(ks)) > 1 or ks[0] != 0


# ---------------------------------------------------------------------------------------
# experiments: a few training steps on the synthetic mini-ImageNet, then evaluation
# ---------------------------------------------------------------------------------------

def test_miniimagenet_trains_in_the_experiments(mini_csv):
    """The experiments' data path on the synthetic mini-ImageNet: load (uint8 ClassImages
    with the training split's statistics), the training split on the device, the config's
    sampler inside two jitted training steps; then the fixed validation tasks."""
    from experiments import config_lib, datasets, wiring
    from maml_jax import meta
    cfg = config_lib.validate_config(config_lib.miniimagenet_config(
        3, 1, "mamlpp", name="tiny_mini", image_size=SIZE, num_filters=4, q_query=2,
        q_query_eval=2, num_inner_steps=1, num_inner_steps_eval=1, num_epochs=1,
        iterations_per_epoch=2, steps_per_call=2, num_val_tasks=4, num_test_tasks=4,
        dataset_strict=False, first_order=True, msl=False))  # the data path is under test
    assert cfg["clip_value"] == 10.0 and not cfg["rotate_train"] and cfg["image_channels"] == 3
    images, splits = datasets.load_images(cfg, str(mini_csv))
    datasets.check_task_requests(cfg, splits, images)
    train_images = jax.device_put(
        datasets.device_images(datasets.select_classes(images, splits["train"])))
    assert train_images.images.dtype == jnp.uint8       # CPU: no memory limit, stays uint8
    setup = wiring.get_setup(cfg)
    state = wiring.init_state(cfg, setup)
    assert state.meta_params["params"]["conv0"]["kernel"].shape[2] == 3   # RGB input
    state, metrics = meta.jit_train_steps(
        state, train_images, sample_tasks=setup.sample_fn, num_steps=2,
        loss_fn=setup.train_loss_fn, optimizer=setup.optimizer, config=setup.meta_config,
        first_order=True, msl=False)
    assert int(state.step) == 2 and np.isfinite(np.asarray(metrics["loss"])).all()
    (xs, _ys), (xq, _yq) = datasets.fixed_eval_tasks(
        jax.device_put(datasets.select_classes(images, splits["val"])), cfg, "val")
    assert xs.shape == (4, 3, SIZE, SIZE, 3) and xq.shape == (4, 6, SIZE, SIZE, 3)
    # errors before anything compiles: no --data-dir, a split too small for the request
    with pytest.raises(datasets.DataError, match="cannot be downloaded: pass --data-dir"):
        datasets.load_images(cfg, None)
    with pytest.raises(datasets.DataError, match=r"class .* of the 'train' split has 6 images"):
        datasets.load_images({**cfg, "q_query": 6}, str(mini_csv))
    with pytest.raises(config_lib.ConfigError, match="image_channels must be 3"):
        config_lib.validate_config({**cfg, "image_channels": 1})
    presets = config_lib.MINIIMAGENET_INNER_LR_PRESETS
    assert config_lib.miniimagenet_config(5, 1)["inner_lr"] == presets["reference"] == 0.1
    assert config_lib.miniimagenet_config(5, 1, inner_lr_preset="paper")["inner_lr"] == 0.01


# ---------------------------------------------------------------------------------------
# TFDS omniglot (optional extra): the same classes and drawings as the zip loader
# ---------------------------------------------------------------------------------------

def _write_tfds_omniglot(tfds, zips: pathlib.Path, data_dir: pathlib.Path) -> None:
    """A TFDS-format ``omniglot`` (array_record) written by TFDS itself from the zips' PNG
    bytes, without TensorFlow: a builder of our own with TFDS's omniglot features and split
    names (TFDS's builder needs TensorFlow to list the files; it encodes PNG file objects
    without it)."""
    import io
    import zipfile

    members = {}
    for split, stem in (("train", "images_background"), ("test", "images_evaluation")):
        with zipfile.ZipFile(zips / f"{stem}.zip") as zf:
            members[split] = [(i.filename, zf.read(i)) for i in zf.infolist()
                              if i.filename.endswith(".png")]
    alphabets = sorted({n.split("/")[1] for ms in members.values() for n, _ in ms})
    chars = max(int(n.split("/")[3].split("_")[0]) for ms in members.values() for n, _ in ms)

    class Omniglot(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        VERSION = tfds.core.Version("3.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(105, 105, 3), encoding_format="png"),
                "alphabet": tfds.features.ClassLabel(names=alphabets),
                "alphabet_char_id": np.int64,
                "label": tfds.features.ClassLabel(num_classes=chars)}))

        def _split_generators(self, dl_manager):
            return {s: self._generate_examples(s) for s in members}

        def _generate_examples(self, split):
            # Reversed: TFDS's record order is not the zips' order either.
            for name, data in reversed(members[split]):
                _, alphabet, char, file = name.split("/")
                rgb = io.BytesIO()
                Image.open(io.BytesIO(data)).convert("RGB").save(rgb, format="PNG")
                rgb.seek(0)
                yield name, {"image": rgb, "alphabet": alphabet,
                             "alphabet_char_id": int(char[len("character"):]) - 1,
                             "label": int(file.split("_")[0]) - 1}

    Omniglot(data_dir=str(data_dir), file_format="array_record").download_and_prepare()


def test_tfds_omniglot_matches_the_zip_loader(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")  # the optional extra ".[tfds]"
    from test_omniglot import TINY_COUNTS, TINY_LAYOUT, make_archive

    from maml_jax.data import omniglot, tfds_omniglot
    zips = tmp_path / "zips"
    zips.mkdir()
    for i, (stem, layout) in enumerate(TINY_LAYOUT.items()):
        make_archive(zips / f"{stem}.zip", stem, layout, seed=i)
    _write_tfds_omniglot(tfds, zips, tmp_path / "tfds")
    for size in (28, 105):
        want = omniglot.load_omniglot(zips, image_size=size, download=False,
                                      expected_counts=TINY_COUNTS, cache_dir=tmp_path / "c")
        got = tfds_omniglot.load_tfds_omniglot(tmp_path / "tfds", image_size=size)
        assert got.class_names == want.class_names and got.images.shape == want.images.shape
        for g, w in zip(got.images, want.images, strict=True):   # each class: the same 20 drawings
            key = lambda d: d.tobytes()  # TFDS keeps no drawer order
            np.testing.assert_array_equal(np.stack(sorted(g, key=key)),
                                          np.stack(sorted(w, key=key)))
    with pytest.raises(tfds_omniglot.TfdsOmniglotError, match="no prepared TFDS omniglot"):
        tfds_omniglot.load_tfds_omniglot(tmp_path / "zips")


def test_tfds_source_errors_name_the_extra_and_the_folder(tmp_path, monkeypatch):
    """data="tfds" without TFDS installed, or without a prepared dataset: a message that says
    what to install or prepare, before anything is compiled."""
    from experiments import config_lib, datasets
    cfg = config_lib.validate_config({**config_lib.mamlpp_config(5, 1), "data": "tfds"})
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)   # not installed
    with pytest.raises(datasets.DataError,
                       match=r"needs TensorFlow Datasets: pip install .*\[tfds\]"):
        datasets.load_images(cfg, str(tmp_path))
    with pytest.raises(config_lib.ConfigError, match="data='tfds' is grey"):
        config_lib.validate_config({**cfg, "image_channels": 3})


@pytest.mark.parametrize("name", ["miniimagenet_5w1s_mamlpp", "miniimagenet_5w5s_mamlpp",
                                  "miniimagenet_5w1s_maml", "miniimagenet_5w5s_maml",
                                  "miniimagenet_5w1s_mamlpp:smoke"])
def test_miniimagenet_config_files(name):
    from experiments import config_lib, flag_parsing
    file = name.split(":")[0]
    path = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "configs" / f"{file}.py"
    cfg = config_lib.validate_config(flag_parsing.config_from_flags(
        [f"--config={path}" + name[len(file):]]))
    name = name.replace(":", "_")
    doc = path.read_text()
    assert cfg["name"] == name and "python -m experiments.train" in doc and "runtime" in doc
    assert cfg["data"] == "miniimagenet" and cfg["image_channels"] == 3 and cfg["image_resize"]
    assert cfg["q_query"] == cfg["q_query_eval"] == (5 if name.endswith("smoke") else 15)
    assert not cfg["rotate_train"] and cfg["paper_test_accuracy"] is not None
    if name.endswith("smoke"):
        return
    assert cfg["image_size"] == 84 and cfg["dataset_strict"]
    shots = int(name.split("_")[1][2])
    if name.endswith("mamlpp"):
        assert (cfg["num_filters"], cfg["meta_batch_size"], cfg["num_inner_steps"],
                cfg["num_inner_steps_eval"], cfg["msl_epochs"],
                cfg["clip_value"]) == (48, 2, 5, 5, 15, 10.0)
        assert cfg["inner_lr"] == 0.1 and cfg["lr_granularity"] == "layer_step" and cfg["msl"]
        assert (cfg["num_epochs"], cfg["iterations_per_epoch"],
                cfg["lr_schedule"]) == (100, 500, "cosine")
        assert cfg["paper_test_accuracy"] == ((52.15, 0.26) if shots == 1 else (68.32, 0.44))
    else:
        assert (cfg["num_filters"], cfg["meta_batch_size"]) == (32, 4 if shots == 1 else 2)
        assert (cfg["num_inner_steps"], cfg["num_inner_steps_eval"],
                cfg["inner_lr"]) == (5, 10, 0.01)
        assert cfg["lr_granularity"] == "scalar" and not cfg["msl"] and not cfg["per_step_bn"]
        assert cfg["num_epochs"] * cfg["iterations_per_epoch"] == 60000
        assert cfg["paper_test_accuracy"] == ((48.70, 1.84) if shots == 1 else (63.11, 0.92))
