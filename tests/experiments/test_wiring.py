"""``experiments.wiring``: the config's MetaConfig, the training sampler's rotations, the
host loop's steps per call, and the mesh. (Every config key reaching the code it configures:
``test_config_keys.py``.)"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import maml_jax as mj
from experiments import config_lib, wiring
from maml_jax import meta
from tests.support.tiny_runs import tiny_config, wiring_config

# Which config key sets each MetaConfig field (the rest are library defaults no config sets).
META_CONFIG_KEYS = {"num_inner_steps": "num_inner_steps", "msl": "msl",
                    "msl_epochs": "msl_epochs", "first_order": "first_order",
                    "first_order_epochs": "first_order_epochs",
                    "learn_inner_lrs": "learn_inner_lrs",
                    "iterations_per_epoch": "iterations_per_epoch",
                    "task_batching": "task_batching", "task_groups": "task_groups",
                    "remat": "remat",
                    "inner_grad_clip": "inner_grad_clip"}
LIBRARY_DEFAULTS = ("unroll", "bn_momentum", "skip_nonfinite")


@pytest.mark.parametrize("value_of", [
    dict(num_inner_steps=3, msl=False, msl_epochs=7, first_order=True, first_order_epochs=4,
         learn_inner_lrs=False, iterations_per_epoch=6, task_batching="map", task_groups=2,
         remat=True,
         inner_grad_clip=5.0, algorithm={"name": "reptile", "inner_optimizer": "adam"}),
    dict(num_inner_steps=1, msl=True, msl_epochs=1, first_order=False, first_order_epochs=0,
         learn_inner_lrs=True, iterations_per_epoch=3, task_batching="vmap", task_groups=1,
         remat=False,
         inner_grad_clip=None, algorithm={"name": "maml"}),
])
def test_config_to_meta_config_table(value_of):
    """Each MetaConfig field takes its config key's value (two rows: every field set away
    from its default, and every field back at another value)."""
    fields = {f.name for f in dataclasses.fields(meta.MetaConfig)}
    assert fields == set(META_CONFIG_KEYS) | set(LIBRARY_DEFAULTS) | {"algorithm"}
    mc = wiring.get_setup(wiring_config(value_of)).meta_config
    for field, key in META_CONFIG_KEYS.items():
        assert getattr(mc, field) == value_of[key], field
    # the algorithm key holds the name and the settings of the algorithm the config builds
    assert mc.algorithm == mj.make_algorithm(**value_of["algorithm"])
    for field in LIBRARY_DEFAULTS:
        assert getattr(mc, field) == getattr(meta.MetaConfig(), field), field
    # DA: first order while epoch < first_order_epochs, then second order.
    maml_config = dataclasses.replace(mc, algorithm=mj.algorithms.MAML())
    for epoch in range(6):
        want = value_of["first_order"] or epoch < value_of["first_order_epochs"]
        assert meta.phase(maml_config, epoch)[0] == want, epoch


def test_seed_shards_on_one_device_is_an_error():
    with pytest.raises(config_lib.ConfigError, match="cannot split 1 devices into 2 seed"):
        wiring.make_mesh(wiring_config({"num_seeds": 2, "seed_shards": 2}))
    assert wiring.make_mesh(wiring_config({"num_seeds": 2})) is None


def test_training_rotation_reaches_the_sampler():
    """``rotate_train`` decides whether training tasks hold rotated characters."""
    images = np.random.RandomState(0).rand(12, 20, 28, 28).astype(np.float32)
    originals = {images[c, d].tobytes() for c in range(12) for d in range(20)}
    seen = {}
    for rotate in (True, False):
        setup = wiring.get_setup(tiny_config(rotate_train=rotate, synthetic_counts=(12, 5, 5),
                                             synthetic_num_classes=22))
        (xs, _), (xq, _) = setup.sample_fn(jax.random.PRNGKey(0), jnp.asarray(images))
        pictures = np.concatenate([np.asarray(xs), np.asarray(xq)], axis=1)[..., 0]
        seen[rotate] = np.mean([p.tobytes() in originals for p in pictures.reshape(-1, 28, 28)])
    assert seen[False] == 1.0
    assert seen[True] < 0.6  # 3 rotations in 4 change the picture


def test_steps_per_call_divides_epoch():
    assert wiring.steps_per_call(tiny_config(iterations_per_epoch=500, steps_per_call=48)) == 25
    assert wiring.steps_per_call(tiny_config(iterations_per_epoch=7, steps_per_call=50)) == 7
