"""maml_jax.data.tfds_omniglot (optional extra): the same classes and drawings as the zip
loader, on a TFDS omniglot written from the tiny archives."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
from PIL import Image

from tests.support.omniglot_archives import TINY_COUNTS, TINY_LAYOUT, make_archive


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
