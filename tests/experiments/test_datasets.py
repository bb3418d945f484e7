"""``experiments.datasets``: the experiments' data path on a synthetic mini-ImageNet (a few
training steps, then the fixed validation tasks), and the TFDS source's errors."""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.support.synthetic_images import SIZE


@pytest.mark.slow
def test_miniimagenet_trains_in_the_experiments(mini_csv):
    """The experiments' data path on the synthetic mini-ImageNet: load (uint8 ClassImages
    with the training split's statistics), the training split on the device, the config's
    sampler inside two jitted training steps; then the fixed validation tasks."""
    from experiments import config_lib, datasets, wiring
    from maml_jax import parallel
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
    state, metrics = parallel.jit_train_steps(
        state, train_images, sample_tasks=setup.sample_fn, num_steps=2,
        loss_fn=setup.train_loss_fn, optimizer=setup.optimizer, config=setup.meta_config,
        phase=(True, False))
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


def test_a_sinusoid_config_has_no_images_to_load(tmp_path, capsys):
    """Sinusoid tasks are drawn on the device: the image pipeline refuses them clearly
    instead of looking for Omniglot."""
    from experiments import config_lib, datasets, train
    cfg = config_lib.validate_config(config_lib.sinusoid_config())
    with pytest.raises(config_lib.ConfigError, match="data='sinusoid' has no images to load"):
        datasets.load_images(cfg, None)
    config = tmp_path / "sinusoid.py"
    config.write_text("from experiments.config_lib import sinusoid_config\n"
                      "def get_config():\n    return sinusoid_config()\n")
    assert train.main([f"--config={config}", f"--workdir={tmp_path / 'w'}"]) == 2
    assert "python -m experiments.sinusoid" in capsys.readouterr().err
