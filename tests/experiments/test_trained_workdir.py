"""``experiments.trained_workdir``: what opening a workdir refuses, with clear errors (an
opened, trained one is evaluated end to end in ``test_train.py``)."""

from __future__ import annotations

import json

import pytest

from experiments import checkpoints
from experiments.config_lib import ConfigError, config_to_json, mamlpp_config, validate_config
from experiments.trained_workdir import open_trained_workdir, training_finished


def test_open_refuses_what_it_cannot_evaluate(tmp_path):
    with pytest.raises(ConfigError, match=r"holds no config\.json: not a training workdir"):
        with open_trained_workdir(tmp_path):
            pass
    cfg = validate_config(mamlpp_config(5, 1, data="synthetic", synthetic_num_classes=30,
                                        synthetic_counts=(20, 5, 5), num_filters=4))
    (tmp_path / checkpoints.CONFIG_FILE).write_text(config_to_json(cfg))
    with pytest.raises(ConfigError, match="training did not finish"):
        with open_trained_workdir(tmp_path, require_finished=True):
            pass
    summary = tmp_path / checkpoints.SUMMARY_FILE
    for finished in (False, True):
        summary.write_text(json.dumps({"finished": finished}))
        assert training_finished(tmp_path) == finished
    with pytest.raises(ConfigError, match="no checkpoint with a validation accuracy"):
        with open_trained_workdir(tmp_path, require_finished=True):
            pass
