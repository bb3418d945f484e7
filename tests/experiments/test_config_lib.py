"""``experiments.config_lib``'s sinusoid configs and comparisons: the image configs' keys
where the meaning is the same, a few sinusoid keys, checked by ``validate_config`` with
clear errors (nothing is compiled); "auto" rate updates resolved in saved configs."""

from __future__ import annotations

import json
import re

import pytest

from experiments import checkpoints
from experiments.config_lib import (
    ConfigError,
    compared_methods,
    comparison_config,
    config_from_json,
    config_to_json,
    mamlpp_config,
    sinusoid_config,
    validate_config,
)


def test_sinusoid_config_is_the_maml_papers_setting():
    cfg = validate_config(sinusoid_config())
    assert (cfg["data"], cfg["k_shot"], cfg["q_query"], cfg["meta_batch_size"]) == \
        ("sinusoid", 10, 10, 25)
    assert (cfg["num_inner_steps"], cfg["inner_lr"], cfg["lr_granularity"],
            cfg["learn_inner_lrs"], cfg["msl"], cfg["lr_schedule"]) == \
        (1, 0.01, "scalar", False, False, "constant")
    assert cfg["num_epochs"] * cfg["iterations_per_epoch"] == 70_000
    assert (cfg["num_test_tasks"], cfg["q_query_eval"], cfg["test_seed"]) == (600, 100, 1000)
    assert (cfg["sinusoid_hidden"], cfg["sinusoid_eval_shots"], cfg["sinusoid_eval_steps"],
            cfg["num_inner_steps_eval"]) == ((40, 40), (5, 10), (1, 5, 10), 10)
    # "auto" resolves as for images: no inner-gradient clip for a scalar rate, 100 per weight
    assert cfg["inner_grad_clip"] is None and cfg["task_batching"] == "vmap"
    assert validate_config(sinusoid_config(lr_granularity="meta_sgd"))["inner_grad_clip"] == 100


@pytest.mark.parametrize("updates, message", [
    ({"sinusoid_eval_steps": (1, 20)},
     "sinusoid_eval_steps (1, 20) reports steps past num_inner_steps_eval (10)"),
    ({"sinusoid_hidden": ()}, "sinusoid_hidden must be a non-empty tuple of integers >= 1, "
                              "got ()"),
    ({"sinusoid_hidden": (40, 0)}, "sinusoid_hidden must be a non-empty tuple of integers >= 1"),
    ({"sinusoid_eval_shots": (5, 2.5)}, "sinusoid_eval_shots must be a non-empty tuple of "
                                        "integers >= 1"),
    ({"sinusoid_eval_steps": (-1,)}, "sinusoid_eval_steps must be a non-empty tuple of "
                                     "integers >= 0"),
    ({"num_seeds": 2}, "data='sinusoid' trains one seed per run: num_seeds must be 1"),
    ({"lr_granularity": "per_weight"}, "lr_granularity must be"),
    ({"inner_loop": "trunk"}, "inner_loop must be all|head|body"),
    ({"algorithm": "reptile"}, "algorithm: Could not override field 'algorithm'"),
    ({"algorithm": {"name": "reptyle"}}, "unknown algorithm 'reptyle'"),
    ({"algorithm": {"name": "reptile", "adam_b1": 1.0}}, "adam_b1 must be in [0, 1)"),
    ({"algorithm": {"name": "reptile", "lam": 1.0}}, "unexpected keyword argument 'lam'"),
    ({"rate_update": "log", "inner_lr": 0.0}, "inner_lr must be > 0"),
    ({"k_shot": 0}, "k_shot must be an integer >= 1"),
    ({"q_query_eval": 0}, "q_query and q_query_eval must be >= 1"),
    ({"task_groups": 0}, "task_groups must be an int >= 1, got 0"),
    ({"task_groups": True}, "task_groups must be an int >= 1, got True"),
])
def test_sinusoid_config_errors(updates, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate_config(sinusoid_config(**updates))


def test_an_algorithm_without_a_name_is_refused():
    """Study grids and tests hand validate_config plain dicts (no ConfigDict typing)."""
    with pytest.raises(ConfigError, match="algorithm must be a dict with a 'name'"):
        validate_config({**sinusoid_config().to_dict(), "algorithm": "reptile"})
    assert validate_config({**sinusoid_config().to_dict(),
                            "algorithm": {"name": "reptile"}})["algorithm"] == {"name": "reptile"}


def test_sinusoid_keys_are_ignored_by_image_configs():
    """Only a sinusoid run adapts for num_inner_steps_eval and reports sinusoid_eval_steps."""
    cfg = validate_config(mamlpp_config(5, 1, sinusoid_eval_steps=(1, 20)))
    assert cfg["sinusoid_eval_steps"] == (1, 20) and cfg["num_inner_steps_eval"] == 5


def test_a_comparison_is_named_configs_over_shared_settings():
    cmp = comparison_config(sinusoid_config(meta_batch_size=5),
                            {"A": {}, "B": {"num_inner_steps": 3, "msl": True}},
                            paper_note="the paper's numbers")
    methods = compared_methods(cmp)
    assert list(methods) == ["A", "B"]
    assert methods["B"] == validate_config(sinusoid_config(name="B", meta_batch_size=5,
                                                           num_inner_steps=3, msl=True))
    assert methods["A"]["num_inner_steps"] == 1 and methods["A"]["name"] == "A"
    assert cmp.paper_note == "the paper's numbers"
    assert list(compared_methods(sinusoid_config(name="one"))) == ["one"]   # a plain config
    # a method's keys are typed like base_config's: an override parses as that key's type
    cmp.methods.B.num_inner_steps = 4
    with pytest.raises(TypeError):
        cmp.methods.B.num_inner_steps = "four"


def test_comparison_errors_name_the_method():
    with pytest.raises(ConfigError, match=re.escape("method 'B': unknown config keys ['steps']")):
        comparison_config(sinusoid_config(), {"B": {"steps": 3}})
    with pytest.raises(ConfigError, match="method 'B': num_inner_steps must be an integer >= 1"):
        compared_methods(comparison_config(sinusoid_config(), {"B": {"num_inner_steps": 0}}))
    with pytest.raises(ConfigError, match="the comparison has no methods"):
        compared_methods(comparison_config(sinusoid_config(), {}))
    with pytest.raises(ConfigError, match="unknown config keys"):
        comparison_config({"num_waze": 5}, {"A": {}})


def test_a_saved_config_names_the_rate_update_it_trained_with():
    """"auto" is resolved when a config is checked, so config.json says which preset moved
    the rates; a config saved unresolved before the per-weight default changed reads as the
    preset "auto" meant then, and resuming it under today's default is refused."""
    meta_sgd = validate_config(mamlpp_config(5, 1, lr_granularity="meta_sgd"))
    assert meta_sgd["rate_update"] == "log_10x"
    assert validate_config(mamlpp_config(5, 1))["rate_update"] == "reference"
    assert config_from_json(config_to_json(meta_sgd))["rate_update"] == "log_10x"
    old = json.loads(config_to_json(meta_sgd))
    old["rate_update"] = "auto"
    assert config_from_json(json.dumps(old))["rate_update"] == "log"
    layer = json.loads(config_to_json(validate_config(mamlpp_config(5, 1))))
    layer["rate_update"] = "auto"
    assert config_from_json(json.dumps(layer))["rate_update"] == "reference"
    with pytest.raises(ConfigError, match="rate_update: 'log' -> 'log_10x'"):
        checkpoints._check_resume_config(config_from_json(json.dumps(old)), meta_sgd)
