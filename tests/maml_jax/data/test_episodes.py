"""maml_jax.data.episodes: N-way K-shot episodes from class images (shapes, labels, exact
copies, rotations, jit and vmap, the fixed evaluation tasks, class expansion), uint8 and
ragged classes against the float path."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from maml_jax.data import episodes
from tests.support.synthetic_images import SIZE

C, H = 12, 8


@pytest.fixture(scope="module")
def synth():
    # Random float images: every drawing and every rotation of it is unique, so any
    # sampled image can be traced back to (class, drawing, rotation).
    imgs = np.random.RandomState(0).rand(C, 20, H, H).astype(np.float32)
    lookup = {}
    for c in range(C):
        for d in range(20):
            for k in range(4):
                lookup[np.rot90(imgs[c, d], k).tobytes()] = (c, d, k)
    assert len(lookup) == C * 20 * 4
    return imgs, lookup


def _trace(x, lookup):
    return [lookup[np.asarray(im[..., 0]).tobytes()] for im in np.asarray(x)]


def _check_task(task, lookup, n, k, q, rotate):
    xs, ys, xq, yq = task
    assert xs.shape == (n * k, H, H, 1) and xq.shape == (n * q, H, H, 1)
    assert xs.dtype == jnp.float32 and xq.dtype == jnp.float32
    assert ys.dtype == jnp.int32 and yq.dtype == jnp.int32
    np.testing.assert_array_equal(ys, np.repeat(np.arange(n), k))
    np.testing.assert_array_equal(yq, np.repeat(np.arange(n), q))
    s, qq = _trace(xs, lookup), _trace(xq, lookup)
    classes, rots = [], []
    for i in range(n):
        si, qi = s[i * k : (i + 1) * k], qq[i * q : (i + 1) * q]
        cls = {t[0] for t in si + qi}
        rot = {t[2] for t in si + qi}
        assert len(cls) == 1 and len(rot) == 1  # one class, one rotation, support & query
        draws = [t[1] for t in si + qi]
        assert len(set(draws)) == k + q  # distinct drawings: support/query disjoint
        classes.append(cls.pop())
        rots.append(rot.pop())
    assert len(set(classes)) == n
    if not rotate:
        assert rots == [0] * n
    return classes, rots


def test_sample_task_shapes_labels_and_exact_copies(synth):
    imgs, lookup = synth
    task = episodes.sample_task(jax.random.PRNGKey(0), jnp.asarray(imgs), 5, 2, 3, rotate=False)
    _check_task(task, lookup, 5, 2, 3, rotate=False)
    # NumPy input works too.
    task_np = episodes.sample_task(jax.random.PRNGKey(0), imgs, 5, 2, 3)
    for a, b in zip(task, task_np, strict=True):
        np.testing.assert_array_equal(a, b)


def test_sample_task_deterministic_and_key_dependent(synth):
    imgs, _ = synth
    a = episodes.sample_task(jax.random.PRNGKey(7), imgs, 5, 1, 5, rotate=True)
    b = episodes.sample_task(jax.random.PRNGKey(7), imgs, 5, 1, 5, rotate=True)
    c = episodes.sample_task(jax.random.PRNGKey(8), imgs, 5, 1, 5, rotate=True)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])


def test_sample_task_rotation_per_class(synth):
    imgs, lookup = synth
    all_rots, all_classes = [], []
    for seed in range(8):
        task = episodes.sample_task(jax.random.PRNGKey(seed), imgs, 4, 1, 2, rotate=True)
        classes, rots = _check_task(task, lookup, 4, 1, 2, rotate=True)
        all_rots += rots
        all_classes += classes
    assert set(all_rots) == {0, 1, 2, 3}
    assert len(set(all_classes)) > 4  # classes vary between episodes


def test_sample_under_jit_and_vmap(synth):
    imgs, lookup = synth
    key = jax.random.PRNGKey(3)
    jitted = jax.jit(lambda k, im: episodes.sample_task(k, im, 3, 2, 2, rotate=True))
    eager = episodes.sample_task(key, imgs, 3, 2, 2, rotate=True)
    for a, b in zip(jitted(key, jnp.asarray(imgs)), eager, strict=True):
        np.testing.assert_array_equal(a, b)

    keys = jax.random.split(key, 6)
    batch = jax.vmap(lambda k: episodes.sample_task(k, imgs, 3, 2, 2, rotate=True))(keys)
    assert batch[0].shape == (6, 6, H, H, 1)
    for i in range(6):
        _check_task([t[i] for t in batch], lookup, 3, 2, 2, rotate=True)

    many = episodes.sample_tasks(key, imgs, 6, 3, 2, 2, rotate=True)
    assert many[0].shape == (6, 6, H, H, 1) and many[3].shape == (6, 6)
    for a, b in zip(many, batch, strict=True):  # task i uses jax.random.split(key, B)[i]
        np.testing.assert_array_equal(a, b)


def test_task_spec_errors(synth):
    imgs, _ = synth
    key = jax.random.PRNGKey(0)
    with pytest.raises(ValueError,
                       match="asked for 20-way tasks but the 'val' split has only 5 classes"):
        episodes.validate_task_spec(5, 20, 1, 1, split_name="val")
    with pytest.raises(ValueError, match=r"13-way.*only 12 classes"):
        episodes.sample_task(key, imgs, 13, 1, 1)
    with pytest.raises(ValueError, match="'train' split has only 12 classes"):
        episodes.sample_tasks(key, imgs, 2, 20, 1, 1, split_name="train")
    with pytest.raises(ValueError, match=r"21 distinct drawings.*only 20 drawings"):
        episodes.sample_task(key, imgs, 5, 5, 16)
    with pytest.raises(ValueError, match="k_shot"):
        episodes.sample_task(key, imgs, 5, 0, 1)
    with pytest.raises(ValueError, match="21 distinct"):
        episodes.fixed_tasks(imgs, num_ways=2, k_shot=1, q_query=20)


def test_fixed_tasks_deterministic(synth):
    imgs, lookup = synth
    a = episodes.fixed_tasks(imgs, num_ways=5, k_shot=1, q_query=3, num_tasks=20, seed=0)
    b = episodes.fixed_tasks(jnp.asarray(imgs), num_ways=5, k_shot=1, q_query=3, num_tasks=20,
                             seed=0)
    c = episodes.fixed_tasks(imgs, num_ways=5, k_shot=1, q_query=3, num_tasks=20, seed=1)
    assert a[0].shape == (20, 5, H, H, 1) and a[2].shape == (20, 15, H, H, 1)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])
    for i in range(20):
        _check_task([t[i] for t in a], lookup, 5, 1, 3, rotate=False)  # never rotated
    assert len({tuple(np.asarray(a[0][i]).ravel()[:4]) for i in range(20)}) > 1


def test_fixed_tasks_pinned_fingerprint(synth):
    """The fixed evaluation tasks are the same in every process and every version of this
    code: the (class, drawing) of the first two tasks, pinned (seed 0, 5-way 1-shot 3-query)."""
    imgs, lookup = synth
    xs, _, xq, _ = episodes.fixed_tasks(imgs, num_ways=5, k_shot=1, q_query=3, num_tasks=20, seed=0)
    trace = lambda x: [t[:2] for t in _trace(x, lookup)]
    assert trace(xs[0]) == [(0, 17), (10, 11), (8, 16), (4, 18), (5, 12)]
    assert trace(xq[0])[:6] == [(0, 12), (0, 4), (0, 7), (10, 3), (10, 16), (10, 4)]
    assert trace(xs[1]) == [(10, 4), (5, 0), (3, 8), (11, 10), (4, 4)]
    assert trace(xq[1])[-3:] == [(4, 5), (4, 18), (4, 1)]


def test_class_expansion(synth):
    imgs, _ = synth
    for arr in (imgs, jnp.asarray(imgs)):
        out = episodes.class_expansion(arr)
        assert out.shape == (4 * C, 20, H, H)
        assert isinstance(out, np.ndarray) == isinstance(arr, np.ndarray)  # kind kept
        for k in range(4):
            np.testing.assert_array_equal(
                np.asarray(out[k * C : (k + 1) * C]), np.rot90(imgs, k, axes=(2, 3))
            )
    with pytest.raises(ValueError):
        episodes.class_expansion(imgs[:, :, :, :4])


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
