"""``experiments.flag_parsing``: ``--config=FILE[:VARIANT]`` and ``--config.KEY=VALUE``
overrides, config-file errors, and the saved config's JSON round trip (nothing is
compiled)."""

from __future__ import annotations

import pytest

from experiments import config_lib, flag_parsing
from tests.support.repo import CONFIG_DIR


def test_overrides():
    """``--config.KEY=VALUE`` (config_flags): typed by the default, placeholders included."""
    path = CONFIG_DIR / "omniglot_5w1s_mamlpp.py"
    cfg = flag_parsing.config_from_flags(
        [f"--config={path}", "--config.num_filters=8", "--config.meta_lr=inf",
         "--config.msl=false", "--config.clip_value=10", "--config.synthetic_counts=(1,2,3)",
         "--config.split_counts=(64,16,20)", "--config.name=x=y", "--config.num_epochs=2"])
    assert cfg["num_filters"] == 8 and cfg["meta_lr"] == float("inf") and cfg["msl"] is False
    assert cfg["clip_value"] == 10.0 and isinstance(cfg["clip_value"], float)
    assert cfg["synthetic_counts"] == (1, 2, 3) and cfg["split_counts"] == (64, 16, 20)
    assert cfg["name"] == "x=y" and cfg["num_epochs"] == 2
    for bad, message in ((["--config.nope=1"], "unknown config key 'nope'"),
                         (["--config.num_filters=abc"], "num_filters"),
                         (["--config.msl=maybe"], "msl")):
        with pytest.raises(config_lib.ConfigError, match=message):
            flag_parsing.config_from_flags([f"--config={path}", *bad])
    with pytest.raises(config_lib.ConfigError, match="num_filters"):
        config_lib.validate_config(flag_parsing.config_from_flags(
            [f"--config={path}", "--config.num_filters=0"]))
    with pytest.raises(config_lib.ConfigError, match="unknown config variant 'huge'"):
        flag_parsing.config_from_flags([f"--config={path}:huge"])


def test_config_file_errors(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from ml_collections import ConfigDict\n"
                   "def get_config():\n    return ConfigDict({'num_waze': 5})\n")
    with pytest.raises(config_lib.ConfigError, match="unknown keys"):
        config_lib.validate_config(flag_parsing.config_from_flags([f"--config={bad}"]))
    plain = tmp_path / "plain.py"
    plain.write_text("def get_config():\n    return {'num_ways': 5}\n")
    with pytest.raises(config_lib.ConfigError, match="must return ConfigDict"):
        flag_parsing.config_from_flags([f"--config={plain}"])
    with pytest.raises(config_lib.ConfigError, match="not found"):
        flag_parsing.config_from_flags([f"--config={tmp_path / 'missing.py'}"])
    # the saved config.json round-trips, tuples included (the resume check compares them)
    cfg = config_lib.validate_config(config_lib.mamlpp_config(
        5, 1, data="image_folder", split_counts=(1, 2, 3), clip_value=float("inf")))
    assert config_lib.config_from_json(config_lib.config_to_json(cfg)) == cfg


def test_run_main_maps_errors_to_exit_statuses(capsys):
    """Bad input: 2, a diverged training: 3, each as one line on stderr; bugs propagate."""
    from experiments.datasets import DataError
    from maml_jax import NonFiniteLossError

    def raising(err):
        def body():
            raise err
        return body

    for err, status in ((config_lib.ConfigError("num_ways must be >= 1"), 2),
                        (DataError("no Omniglot archives in /data"), 2),
                        (NonFiniteLossError("non-finite loss at outer step 3"), 3)):
        assert flag_parsing.run_main(raising(err)) == status
        assert capsys.readouterr().err == f"error: {err}\n"
    missing = FileNotFoundError("runs/a/test_results.json not found")
    assert flag_parsing.run_main(raising(missing), usage_errors=(FileNotFoundError,)) == 2
    assert capsys.readouterr().err == f"error: {missing}\n"
    for bug in (missing, KeyError("a bug")):
        with pytest.raises(type(bug)):
            flag_parsing.run_main(raising(bug))
    assert [flag_parsing.run_main(lambda s=s: s) for s in (None, 0, 1)] == [0, 0, 1]


@pytest.mark.parametrize("script", ["train", "evaluate", "reproduce", "study", "study_grid",
                                    "compare", "sinusoid", "sinusoid_outliers"])
def test_every_script_exits_2_on_a_bad_flag(script, capsys):
    import importlib
    module = importlib.import_module(f"experiments.{script}")
    assert module.main(["--no-such-flag"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no-such-flag" in err and err.count("\n") == 1, err
    assert module.main(["--help"]) == 0
    assert "flags:" in capsys.readouterr().out
