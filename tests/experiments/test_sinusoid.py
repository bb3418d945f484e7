"""``experiments.sinusoid``: the `make demo` script (smoke config) and its exit statuses, the
sinusoid trainer's numbers pinned to the code before sinusoid configs were ordinary configs,
a comparison's shared test settings, and a study grid's sinusoid cell."""

import hashlib
import json

import jax
import numpy as np
import pytest

from experiments import sinusoid
from experiments.config_lib import ConfigError, sinusoid_config, validate_config
from tests.support.repo import CONFIG_DIR

SMOKE = f"--config={CONFIG_DIR / 'sinusoid_paper.py'}:smoke"


@pytest.mark.slow
def test_demo_script_smoke(tmp_path):
    assert sinusoid.main([SMOKE, "--workdir", str(tmp_path), "--no-progress"]) == 0
    for name in ("results.json", "results.md", "trajectory.png", "final_loss_spread.png",
                 "learned_inner_lrs.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    saved = json.loads((tmp_path / "results.json").read_text())
    assert set(saved["test_mse"]) == {"MAML", "MAML++"}
    md = (tmp_path / "results.md").read_text()
    for name, method in saved["test_mse"].items():
        assert set(method) == {"5", "10"}
        for k, per_k in method.items():
            assert set(per_k) == {"0", "1", "3"}
            for mean, ci in per_k.values():
                assert np.isfinite(mean) and ci > 0
            # The published table is the measured one, cell for cell, in step order.
            cells = " | ".join(f"{per_k[s][0]:.3f} ± {per_k[s][1]:.3f}" for s in ("0", "1", "3"))
            assert f"| {name} | {k} | {cells} |" in md, (name, k)
        # Every method trained for the configured iterations, in call-sized chunks.
        log = saved["train_log"][name]
        assert [r["iteration"] for r in log] == [20, 40]
        assert all(np.isfinite(r["loss"]) for r in log)
    assert "| method | K | 0 steps | 1 step | 3 steps |" in md
    assert saved["train_seconds"]["MAML"] > 0
    # The results record every method's checked config (the smoke variant's).
    plus = saved["configs"]["MAML++"]
    assert (plus["data"], plus["num_inner_steps"], plus["msl_epochs"]) == ("sinusoid", 2, 1)
    assert (plus["rate_update"], plus["lr_schedule"]) == ("reference_0.1x", "cosine")
    assert saved["configs"]["MAML"]["num_inner_steps"] == 1


def test_demo_script_rejects_bad_arguments(tmp_path, capsys):
    """Bad input: status 2 and a one-line message, before anything trains."""
    for argv, message in (
            ([f"--config={tmp_path / 'nope.py'}"], "config file not found"),
            ([SMOKE, "--iterations", "0"], "--iterations must be >= 1"),
            ([SMOKE, "--iterations", "30"], "not a whole number of epochs of 20 iterations"),
            ([f"--config={CONFIG_DIR / 'omniglot_5w1s_mamlpp.py'}:smoke"],
             "trains data='sinusoid' configs"),
            ([SMOKE, "--config.methods.MAML.inner_lr=0.1"],
             "--config.methods.MAML.inner_lr: unknown config key 'inner_lr'")):
        assert sinusoid.main([*argv, f"--workdir={tmp_path / 'w'}"]) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "w").exists()


def test_diverging_training_exits_with_status_3(tmp_path, capsys):
    """A rate this large sends MAML's inner loop to inf / NaN: status 3, no traceback."""
    assert sinusoid.main([SMOKE, f"--workdir={tmp_path}", "--no-progress",
                          "--config.inner_lr=1e12"]) == 3
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "non-finite" in err and "Traceback" not in err


def test_a_method_can_be_overridden_alone(tmp_path, monkeypatch):
    """``--config.KEY`` changes every method that does not set KEY itself,
    ``--config.methods.NAME.KEY`` (or ``methods['NAME']`` for other names) one method's."""
    trained = {}

    def fake_train(cfg, **kwargs):
        trained[cfg["name"]] = cfg
        return sinusoid.SinusoidRun({"inner_lrs": {}}, [], 0.0)

    monkeypatch.setattr(sinusoid, "train_sinusoid", fake_train)
    monkeypatch.setattr(sinusoid, "evaluate_sinusoid", lambda cfg, mp: {
        k: np.ones((2, cfg["num_inner_steps_eval"] + 1)) for k in cfg["sinusoid_eval_shots"]})
    monkeypatch.setattr(sinusoid, "make_plots", lambda *args, **kwargs: [])
    assert sinusoid.main([SMOKE, f"--workdir={tmp_path}", "--config.inner_lr=0.02",
                          "--config.methods.MAML.num_inner_steps=3",
                          "--config.methods['MAML++'].msl_epochs=2"]) == 0
    maml, plus = trained["MAML"], trained["MAML++"]
    assert maml["inner_lr"] == plus["inner_lr"] == 0.02
    assert (maml["num_inner_steps"], plus["num_inner_steps"]) == (3, 2)
    assert (maml["msl_epochs"], plus["msl_epochs"]) == (1, 2)


def test_a_comparison_tests_its_methods_alike(tmp_path):
    cfg = {name: validate_config(sinusoid_config(name=name, **updates))
           for name, updates in (("a", {}), ("b", {"test_seed": 7}))}
    with pytest.raises(ConfigError, match="'a' and 'b' are tested differently \\(test_seed\\)"):
        sinusoid.run_comparison(cfg, tmp_path)


# The meta-parameters' sha256 (leaves in tree order) and the last host call's mean loss after
# 3 epochs of 20 iterations (10 per host call; meta-batch 4, K = 5 support and query points,
# seed 3, a 1-8-8-1 MLP), computed on CPU with the sinusoid trainer as it was before sinusoid
# configs became ordinary configs (commit 791dc80: experiments/sinusoid.py's own
# MethodConfig, optimizer and training loop). The same for 300 iterations (meta-batch 25,
# 2 x 40 units) was checked once, and for the smoke comparison and study grid cells.
PINNED = {
    "MAML": ({}, "ffb703ef5257b5b8c5e55354bf389e34b76c98fdbcf057c8a17f93f1473bf7e1",
             4.05587911605835),
    "MAML++": (dict(num_inner_steps=5, lr_granularity="layer_step", learn_inner_lrs=True,
                    msl=True, msl_epochs=2, lr_schedule="cosine", rate_update="reference_0.1x"),
               "65fb18ca7e5091e29b698677a06f763546b21da21cb67256358785f28413bbc1",
               4.408817768096924),
    "Meta-SGD": (dict(num_inner_steps=5, lr_granularity="meta_sgd", learn_inner_lrs=True,
                      rate_update="log", inner_grad_clip=100.0),
                 "4ab0efd409b3d1ad7d8f2585c383c05ed9c697130965c7e049d9e434612fcf3f",
                 4.5056352615356445),
    "ANIL": (dict(num_inner_steps=2, inner_loop="head", clip_value=10.0),
             "f530dd275428738f41ad5f66aa0f340e01cc2c58630359be491b5f40d294f46f",
             4.129096508026123),
}


def _sha256(tree) -> str:
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(tree):
        h.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
    return h.hexdigest()


@pytest.mark.skipif(jax.default_backend() != "cpu",
                    reason="pinned on CPU: other backends round differently")
@pytest.mark.parametrize("name", sorted(PINNED))
def test_training_numbers_are_those_of_the_code_before(name):
    updates, digest, last_loss = PINNED[name]
    cfg = validate_config(sinusoid_config(
        name=name, num_epochs=3, iterations_per_epoch=20, steps_per_call=10, meta_batch_size=4,
        k_shot=5, q_query=5, sinusoid_hidden=(8, 8), seed=3, **updates))
    run = sinusoid.train_sinusoid(cfg)
    assert [r["iteration"] for r in run.train_log] == [10, 20, 30, 40, 50, 60]
    assert run.train_log[-1]["loss"] == last_loss
    assert _sha256(run.meta_params) == digest


def test_a_study_grid_cell_records_its_run(tmp_path):
    cfg = validate_config(sinusoid_config(
        name="MAML++", num_epochs=2, iterations_per_epoch=4, steps_per_call=2, meta_batch_size=2,
        sinusoid_hidden=(4,), num_inner_steps=2, lr_granularity="layer_step",
        learn_inner_lrs=True, msl=True, msl_epochs=1, k_shot=5, q_query=5))
    info = sinusoid.train_sinusoid_workdir(cfg, tmp_path, snapshots=2)
    assert json.loads((tmp_path / sinusoid.RUN_FILE).read_text()) == info
    assert (info["method"], info["k_shot"], info["trained_steps"], info["iterations"]) == \
        ("MAML++", 5, 2, 8)
    assert info["finished"] and info["config"]["msl_epochs"] == 1
    assert info["config"] == json.loads(json.dumps(cfg))   # the checked config, as JSON
    from flax import serialization
    snaps = serialization.msgpack_restore((tmp_path / sinusoid.SNAPSHOTS_FILE).read_bytes())
    assert sorted(snaps, key=int) == ["0", "4", "8"]   # every 8 // 2 iterations, and the end
