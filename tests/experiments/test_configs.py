"""The config files (``experiments/configs``): every paper config and its variants load,
validate and hold the paper's settings (nothing is compiled)."""

from __future__ import annotations

import pytest

from experiments import config_lib, flag_parsing
from tests.support.repo import CONFIG_DIR

CELLS = [f"omniglot_{c}_{m}" for c in ("5w1s", "5w5s", "20w1s", "20w5s")
         for m in ("maml", "mamlpp")]


VARIANTS = {"omniglot_5w1s_mamlpp:smoke": "omniglot_5w1s_mamlpp_smoke",
            "omniglot_5w1s_maml:smoke": "omniglot_5w1s_maml_smoke",
            "omniglot_5w1s_mamlpp:gpu_short": "omniglot_5w1s_mamlpp_gpu_short",
            "omniglot_20w5s_mamlpp:smoke": "omniglot_20w5s_mamlpp_smoke"}


@pytest.mark.parametrize("spec", CELLS + list(VARIANTS))
def test_config_files_load(spec):
    file, _, variant = spec.partition(":")
    path = CONFIG_DIR / f"{file}.py"
    cfg = config_lib.validate_config(flag_parsing.config_from_flags(
        [f"--config={path}" + (f":{variant}" if variant else "")]))
    assert cfg["name"] == VARIANTS.get(spec, file)
    doc = path.read_text()
    assert "python -m experiments.train --config=" in doc and "runtime" in doc and "aper" in doc
    assert f"{file}.py:smoke" in doc   # every paper config documents its CPU smoke variant
    assert cfg["paper_test_accuracy"] is not None
    ways, shots = (int(x) for x in file.split("_")[1].replace("s", "").split("w"))
    assert (cfg["num_ways"], cfg["k_shot"]) == (ways, shots)
    if variant == "smoke":
        assert (cfg["num_filters"], cfg["num_epochs"], cfg["iterations_per_epoch"]) == (16, 3, 100)
    elif variant == "gpu_short":
        assert (cfg["num_epochs"], cfg["msl_epochs"]) == (20, 2)
    elif file.endswith("mamlpp"):
        assert (cfg["meta_batch_size"], cfg["num_inner_steps"],
                cfg["num_inner_steps_eval"]) == (8, 5, 5)
        assert (cfg["lr_granularity"] == "layer_step" and cfg["learn_inner_lrs"]
                and cfg["per_step_bn"])
        assert cfg["msl"] and cfg["msl_epochs"] == 10 and cfg["first_order_epochs"] == 0
        assert (cfg["num_epochs"], cfg["iterations_per_epoch"],
                cfg["num_filters"]) == (100, 500, 64)
        assert cfg["split"] == "reference" and cfg["q_query"] == 1 and cfg["inner_lr"] == 0.1
    else:
        assert cfg["split"] == "maml" and not cfg["msl"] and not cfg["per_step_bn"]
        assert cfg["lr_schedule"] == "constant" and cfg["lr_granularity"] == "scalar"
        assert cfg["inner_lr"] == (0.4 if ways == 5 else 0.1)
        assert cfg["meta_batch_size"] == (32 if ways == 5 else 16)
        assert (cfg["num_inner_steps"], cfg["num_inner_steps_eval"]) == (
            (1, 3) if ways == 5 else (5, 5))


@pytest.mark.parametrize("name", ["miniimagenet_5w1s_mamlpp", "miniimagenet_5w5s_mamlpp",
                                  "miniimagenet_5w1s_maml", "miniimagenet_5w5s_maml",
                                  "miniimagenet_5w1s_mamlpp:smoke"])
def test_miniimagenet_config_files(name):
    file = name.split(":")[0]
    path = CONFIG_DIR / f"{file}.py"
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


@pytest.mark.parametrize("spec", ["sinusoid_paper", "sinusoid_paper:demo", "sinusoid_paper:smoke",
                                  "sinusoid_demo"])
def test_sinusoid_comparison_files(spec):
    """MAML vs MAML++ as a comparison of ordinary sinusoid configs; ``sinusoid_demo.py``
    (``make demo``) is ``sinusoid_paper.py:demo``."""
    file, _, variant = spec.partition(":")
    cfg = flag_parsing.config_from_flags(
        [f"--config={CONFIG_DIR / file}.py" + (f":{variant}" if variant else "")])
    methods = config_lib.compared_methods(cfg)
    assert list(methods) == ["MAML", "MAML++"]
    if file == "sinusoid_demo":
        variant = "demo"
    iterations = {"": 70_000, "demo": 20_000, "smoke": 40}[variant]
    maml, plus = methods["MAML"], methods["MAML++"]
    for m in methods.values():
        assert m["data"] == "sinusoid" and m["k_shot"] == 10 and m["sinusoid_hidden"] == (40, 40)
        assert m["num_epochs"] * m["iterations_per_epoch"] == iterations
    assert (maml["num_inner_steps"], maml["lr_granularity"], maml["learn_inner_lrs"]) == \
        (1, "scalar", False)
    assert plus["num_inner_steps"] == (2 if variant == "smoke" else 10)
    assert (plus["lr_granularity"], plus["rate_update"], plus["lr_schedule"], plus["msl"]) == \
        ("layer_step", "reference_0.1x", "cosine", True)
    assert plus["msl_epochs"] == (1 if variant == "smoke" else 10)
    assert "0.67 / 0.38 / 0.35" in cfg.paper_note
