"""Tests for maml_jax.data.omniglot.

Almost everything runs on tiny Omniglot-shaped archives that the tests build themselves
(``tests/support/omniglot_archives.py``: Pillow-drawn 105x105 1-bit PNGs); one test (marked
``slow``) reads the real archives. The episode samplers the module re-exports are tested in
``test_episodes.py``.
"""

from __future__ import annotations

import hashlib
import io
import os
import pathlib
import time
import urllib.error
import zipfile

import jax
import numpy as np
import pytest
from PIL import Image

from maml_jax.data import omniglot as om
from tests.support.omniglot_archives import TINY_COUNTS, TINY_LAYOUT, TINY_NAMES, make_archive


@pytest.fixture
def tiny_dir(tmp_path: pathlib.Path) -> pathlib.Path:
    data = tmp_path / "omniglot"
    data.mkdir()
    for i, (stem, layout) in enumerate(TINY_LAYOUT.items()):
        make_archive(data / f"{stem}.zip", stem, layout, seed=i)
    return data


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    # Never let a developer's real env var or ~/.cache leak into (or get polluted by) tests.
    monkeypatch.delenv(om.DATA_DIR_ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


def load_tiny(data_dir, **kw):
    kw.setdefault("download", False)
    return om.load_omniglot(data_dir, expected_counts=TINY_COUNTS, **kw)


# ----------------------------------------------------------------------------- paths


def test_resolve_data_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert om.resolve_data_dir() == tmp_path / "home" / ".cache" / "maml_jax" / "omniglot"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert om.resolve_data_dir() == tmp_path / "xdg" / "maml_jax" / "omniglot"
    monkeypatch.setenv(om.DATA_DIR_ENV_VAR, str(tmp_path / "env"))
    assert om.resolve_data_dir() == tmp_path / "env"
    assert om.resolve_data_dir(tmp_path / "flag") == tmp_path / "flag"
    assert om.resolve_data_dir(str(tmp_path / "flag")) == tmp_path / "flag"


def test_env_var_is_used_by_loader(monkeypatch, tiny_dir):
    monkeypatch.setenv(om.DATA_DIR_ENV_VAR, str(tiny_dir))
    assert load_tiny(None).class_names == TINY_NAMES


# ------------------------------------------------------------------------- loading


def test_load_shapes_dtype_range_and_names(tiny_dir):
    data = load_tiny(tiny_dir, image_size=28)
    assert isinstance(data, om.OmniglotData)
    assert data.images.shape == (5, 20, 28, 28)
    assert data.images.dtype == np.float32
    assert data.images.min() >= 0.0 and data.images.max() <= 1.0
    assert data.class_names == TINY_NAMES
    # White paper stays 1.0 (no inversion) and strokes are dark.
    assert data.images.mean() > 0.7
    assert data.images.min() < 0.2
    # Grayscale + Lanczos resize, as documented: compare one drawing bit for bit.
    with zipfile.ZipFile(tiny_dir / "images_evaluation.zip") as zf:
        raw = zf.read("images_evaluation/Gamma/character02/0002_07.png")
    want = Image.open(io.BytesIO(raw)).convert("L").resize((28, 28), Image.LANCZOS)
    np.testing.assert_array_equal(data.images[4, 6], np.asarray(want, np.float32) / 255.0)
    # Lanczos on grayscale gives intermediate values (mode "1" would stay binary).
    assert np.any((data.images > 0.05) & (data.images < 0.95))


def test_image_size_105_is_raw(tiny_dir):
    data = load_tiny(tiny_dir, image_size=105)
    assert data.images.shape == (5, 20, 105, 105)
    assert set(np.unique(data.images)) <= {0.0, 1.0}


def test_cache_created_and_reused(tiny_dir, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = load_tiny(tiny_dir, cache_dir=cache)
    assert len(list(cache.glob("omniglot_28px_*.npy"))) == 1
    assert len(list(cache.glob("omniglot_28px_*.json"))) == 1

    def boom(*a, **k):
        raise AssertionError("decoder called although a valid cache exists")

    monkeypatch.setattr(om, "_decode_archive", boom)
    second = load_tiny(tiny_dir, cache_dir=cache)
    np.testing.assert_array_equal(first.images, second.images)
    assert second.class_names == first.class_names


def test_cache_defaults_to_archive_dir_else_user_cache(tiny_dir, tmp_path):
    load_tiny(tiny_dir)
    assert list(tiny_dir.glob("omniglot_28px_*.npy"))
    # Read-only data dir (as in CI): cache goes to the per-user cache dir instead, even
    # when running as root (which os.access alone would allow to write there).
    for f in tiny_dir.glob("omniglot_*"):
        f.unlink()
    user_cache = tmp_path / "xdg" / "maml_jax" / "omniglot"
    tiny_dir.chmod(0o555)
    try:
        load_tiny(tiny_dir)
        assert not list(tiny_dir.glob("omniglot_*"))
        assert list(user_cache.glob("omniglot_28px_*.npy"))
    finally:
        tiny_dir.chmod(0o755)


def test_cache_rebuilt_on_image_size_or_archive_change(tiny_dir, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    calls = []
    real = om._decode_archive

    def counting(*a, **k):
        calls.append(a)
        return real(*a, **k)

    monkeypatch.setattr(om, "_decode_archive", counting)
    a28 = load_tiny(tiny_dir, cache_dir=cache)
    assert len(calls) == 2
    load_tiny(tiny_dir, cache_dir=cache)
    assert len(calls) == 2  # cache hit

    a14 = load_tiny(tiny_dir, cache_dir=cache, image_size=14)
    assert a14.images.shape == (5, 20, 14, 14)
    assert len(calls) == 4

    # Replace the background archive with different drawings (same counts).
    bg = tiny_dir / "images_background.zip"
    st = bg.stat()
    make_archive(bg, "images_background", TINY_LAYOUT["images_background"], seed=99)
    os.utime(bg, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    b28 = load_tiny(tiny_dir, cache_dir=cache)
    assert len(calls) == 6
    assert not np.array_equal(a28.images[:3], b28.images[:3])
    np.testing.assert_array_equal(a28.images[3:], b28.images[3:])


# ---------------------------------------------------------------------- validation


def test_truncated_archive(tiny_dir):
    bg = tiny_dir / "images_background.zip"
    bg.write_bytes(bg.read_bytes()[:-200])
    with pytest.raises(om.OmniglotArchiveError, match=r"images_background\.zip"):
        load_tiny(tiny_dir)


def test_garbage_archive(tiny_dir):
    ev = tiny_dir / "images_evaluation.zip"
    ev.write_bytes(b"<html>rate limited</html>" * 100)
    with pytest.raises(om.OmniglotArchiveError) as info:
        load_tiny(tiny_dir)
    assert str(ev) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_corrupt_member_crc_detected(tiny_dir, tmp_path):
    ev = tiny_dir / "images_evaluation.zip"
    blob = bytearray(ev.read_bytes())
    with zipfile.ZipFile(ev) as zf:
        member = zf.read("images_evaluation/Gamma/character01/0001_03.png")
    start = bytes(blob).find(member)
    assert start > 0
    blob[start + len(member) // 2] ^= 0xFF
    ev.write_bytes(bytes(blob))
    with pytest.raises(om.OmniglotArchiveError, match=r"images_evaluation\.zip"):
        load_tiny(tiny_dir, cache_dir=tmp_path / "cache")
    # The explicit CRC pass catches it without decoding.
    with pytest.raises(om.OmniglotArchiveError, match="corrupt"):
        om.validate_archive(ev, TINY_COUNTS["images_evaluation"], check_crc=True)


def test_wrong_counts(tiny_dir):
    # Default expectation is the full archive: the tiny one must be rejected.
    with pytest.raises(om.OmniglotArchiveError,
                       match=r"964 .*images_background|images_background.*964"):
        om.load_omniglot(tiny_dir, download=False)
    bad = dict(TINY_COUNTS, images_evaluation=(1, 3, 60))
    with pytest.raises(om.OmniglotArchiveError, match="2 characters"):
        om.load_omniglot(tiny_dir, download=False, expected_counts=bad)
    assert om.validate_archive(tiny_dir / "images_background.zip") == (2, 3, 60)


def test_character_without_20_drawings(tiny_dir):
    make_archive(
        tiny_dir / "images_evaluation.zip", "images_evaluation", {"Gamma": 2},
        short_char=("Gamma", 2),
    )
    # Caught by the cheap structural check...
    with pytest.raises(om.OmniglotArchiveError, match="Gamma/character02 has 19 drawings"):
        om.validate_archive(tiny_dir / "images_evaluation.zip")
    # ...and by the decoder even when validation is switched off.
    with pytest.raises(om.OmniglotArchiveError, match="19 drawings"):
        load_tiny(tiny_dir, validate=False)


def test_missing_dir_without_download(tmp_path, monkeypatch):
    attempts = []

    def no_network(*a, **k):
        attempts.append(a)
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(om.urllib.request, "urlopen", no_network)
    missing = tmp_path / "nowhere"
    with pytest.raises(om.OmniglotNotFoundError) as info:
        om.load_omniglot(missing, download=False)
    msg = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert "--data-dir" in msg and "MAML_JAX_DATA_DIR" in msg
    assert str(missing / "images_background.zip") in msg
    assert attempts == []  # download=False must not even try the network


def test_download_network_failure(tmp_path, monkeypatch):
    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(om.urllib.request, "urlopen", offline)
    target = tmp_path / "dl"
    with pytest.raises(om.OmniglotNotFoundError) as info:
        om.ensure_archives(target, download=True)
    msg = str(info.value)
    assert "--data-dir" in msg and "MAML_JAX_DATA_DIR" in msg and str(target) in msg
    assert not any(p.is_file() for p in target.rglob("*"))  # no partial downloads left


def test_download_success_and_checksum(tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    blobs = {}
    for i, (stem, layout) in enumerate(TINY_LAYOUT.items()):
        make_archive(src / f"{stem}.zip", stem, layout, seed=i)
        blobs[stem] = (src / f"{stem}.zip").read_bytes()
    urls = []

    def fake_urlopen(url, timeout=None):
        urls.append(url)
        assert timeout is not None
        return io.BytesIO(blobs[url.rsplit("/", 1)[1][: -len(".zip")]])

    monkeypatch.setattr(om.urllib.request, "urlopen", fake_urlopen)
    # Official checksums: the fake bytes must be rejected and nothing left behind.
    with pytest.raises(om.OmniglotNotFoundError, match="MD5"):
        om.ensure_archives(tmp_path / "dl1", expected_counts=TINY_COUNTS)
    assert not any(p.is_file() for p in (tmp_path / "dl1").rglob("*"))

    md5 = {k: hashlib.md5(v).hexdigest() for k, v in blobs.items()}
    monkeypatch.setattr(om, "_OFFICIAL_MD5", md5)
    paths = om.ensure_archives(tmp_path / "dl2", expected_counts=TINY_COUNTS)
    assert urls[-1] == "https://github.com/brendenlake/omniglot/raw/master/python/images_evaluation.zip"
    for stem, p in paths.items():
        assert p == tmp_path / "dl2" / f"{stem}.zip"
        assert p.read_bytes() == blobs[stem]
    assert sorted(os.listdir(tmp_path / "dl2")) == ["images_background.zip",
                                                    "images_evaluation.zip"]


# -------------------------------------------------------------------------- splits


@pytest.mark.parametrize(
    "preset,sizes", [("reference", (1150, 50, 423)), ("maml", (1100, 100, 423))]
)
def test_split_presets(preset, sizes):
    s = om.split_classes(1623, preset=preset, seed=0)
    assert tuple(len(s[k]) for k in ("train", "val", "test")) == sizes
    allidx = np.concatenate([s["train"], s["val"], s["test"]])
    assert len(np.unique(allidx)) == 1623 and allidx.min() == 0 and allidx.max() == 1622


def test_split_reference_is_seeded_shuffle():
    a = om.split_classes(preset="reference", seed=0)
    b = om.split_classes(preset="reference", seed=0)
    c = om.split_classes(preset="reference", seed=1)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["test"], c["test"])
    perm = np.random.RandomState(0).permutation(1623)
    np.testing.assert_array_equal(a["val"], np.sort(perm[1150:1200]))
    # A shuffle mixes background (< 964) and evaluation classes into the test set.
    assert (a["test"] < 964).any() and (a["test"] >= 964).any()


def test_split_maml_is_standard_order():
    s = om.split_classes(preset="maml")
    np.testing.assert_array_equal(s["train"], np.arange(1100))
    np.testing.assert_array_equal(s["val"], np.arange(1100, 1200))
    np.testing.assert_array_equal(s["test"], np.arange(1200, 1623))


def test_split_custom_and_errors():
    s = om.split_classes(5, preset="custom", counts=(3, 1, 1), seed=3)
    assert sorted(np.concatenate(list(s.values())).tolist()) == [0, 1, 2, 3, 4]
    assert [len(s[k]) for k in ("train", "val", "test")] == [3, 1, 1]
    with pytest.raises(ValueError, match=r"reference.*maml.*custom"):
        om.split_classes(preset="vinyals")
    with pytest.raises(ValueError, match="1623"):
        om.split_classes(5, preset="reference")
    with pytest.raises(ValueError, match="summing"):
        om.split_classes(5, preset="custom", counts=(3, 1, 2))
    with pytest.raises(ValueError, match="counts"):
        om.split_classes(5, preset="custom")


# ----------------------------------------------------------------------- real data


def _real_data_dir() -> pathlib.Path | None:
    candidates = [pathlib.Path(__file__).resolve().parents[3] / ".." / "shared" / "data"
                  / "omniglot"]
    if os.environ.get(om.DATA_DIR_ENV_VAR):
        candidates.append(pathlib.Path(os.environ[om.DATA_DIR_ENV_VAR]))
    candidates.append(pathlib.Path("/work/shared/data/omniglot"))
    for c in candidates:
        if all((c / f"{n}.zip").is_file() for n in om.ARCHIVE_NAMES):
            return c.resolve()
    return None


# Resolved at import time, before the autouse fixture clears the env var.
REAL_DATA_DIR = _real_data_dir()


@pytest.mark.slow
@pytest.mark.skipif(
    REAL_DATA_DIR is None,
    reason="real Omniglot archives not found in ../shared/data/omniglot, $MAML_JAX_DATA_DIR "
    "or /work/shared/data/omniglot",
)
def test_real_omniglot(tmp_path_factory, record_property):
    cache = tmp_path_factory.mktemp("omniglot_cache")  # the shared folder is read-only
    t0 = time.perf_counter()
    data = om.load_omniglot(REAL_DATA_DIR, cache_dir=cache, download=False)
    decode_s = time.perf_counter() - t0
    record_property("decode_seconds", decode_s)
    print(f"\nfull decode of real Omniglot: {decode_s:.1f} s")
    assert data.images.shape == (1623, 20, 28, 28)
    assert data.images.dtype == np.float32
    assert 0.0 <= data.images.min() and data.images.max() <= 1.0
    assert len(data.class_names) == len(set(data.class_names)) == 1623
    assert sum(n.startswith("background/") for n in data.class_names) == 964
    assert data.class_names == sorted(data.class_names[:964]) + sorted(data.class_names[964:])
    assert data.images.mean() > 0.8  # white paper, black ink

    t0 = time.perf_counter()
    again = om.load_omniglot(REAL_DATA_DIR, cache_dir=cache, download=False)
    cache_s = time.perf_counter() - t0
    record_property("cache_load_seconds", cache_s)
    print(f"cache load of real Omniglot: {cache_s:.2f} s")
    # Relative, not absolute: under a loaded CI machine the ~1 s cache read can pass 2 s.
    assert cache_s < decode_s / 4
    np.testing.assert_array_equal(again.images, data.images)

    splits = om.split_classes(len(data.class_names), preset="reference")
    xs, _ys, xq, _yq = om.sample_task(
        jax.random.PRNGKey(0), data.images[splits["train"]], 20, 5, 15, rotate=True
    )
    assert xs.shape == (100, 28, 28, 1) and xq.shape == (300, 28, 28, 1)
