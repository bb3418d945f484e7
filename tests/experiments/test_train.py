"""``experiments.train``: tiny network, synthetic glyphs, CPU.

One tiny config is compiled once per process (the experiments cache their jitted objects
per config) and reused by the training tests (``tests/support/tiny_runs.py``).

The end-to-end test trains, stops a run after its first epoch and resumes it from what it
left on disk, then evaluates, compares and studies the runs; the others resume from the
latest (not the best) checkpoint, train a population of seeds, stop on a non-finite loss,
train a plain-MAML config end to end, and refuse bad requests before compiling.
"""

from __future__ import annotations

import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from experiments import (
    checkpoints,
    compare,
    config_lib,
    datasets,
    evaluate,
    study,
    study_runs,
    task_metrics,
    train,
    wiring,
)
from maml_jax import parallel
from tests.support.repo import ROOT
from tests.support.tiny_runs import TINY, records, tiny_config


def final_state(workdir):
    cfg = checkpoints.read_workdir_config(workdir)
    setup = wiring.get_setup(cfg)
    mngr = checkpoints.checkpoint_manager(workdir, cfg["keep_best"], read_only=True)
    try:
        state, _ = checkpoints.restore_checkpoint(mngr, mngr.latest_step(),
                                                  wiring.init_population(cfg, setup))
    finally:
        mngr.close()
    return state


def val_records(workdir):
    return records(workdir, "val")


# Tests that train tiny_config() exactly share its compiled functions (wiring.get_setup's
# cache) when they run in one worker: one group, in file order.
TINY_GROUP = pytest.mark.xdist_group("tiny_config")


@pytest.mark.slow
@TINY_GROUP
def test_train_resume_evaluate_end_to_end(tmp_path, capsys):
    """Train -> checkpoint -> stop -> resume from disk -> evaluate -> compare -> study.

    One test (not a module fixture) so that pytest-xdist does not train on two workers.
    """
    cfg = tiny_config()
    full, resumed = tmp_path / "full", tmp_path / "resumed"

    summary = train.train_and_evaluate(cfg, full, progress=False)
    assert summary["finished"] and summary["step"] == 6
    for name in ("config.json", "metrics.jsonl", "metrics.csv", "training_curves.png",
                 "inner_lrs.png", "train_summary.json"):
        assert (full / name).is_file(), name
    assert list((full / "tensorboard").glob("events.out.tfevents.*"))
    assert len(val_records(full)) == 3
    header = (full / "metrics.csv").read_text().splitlines()[0]
    assert header.split(",")[:4] == ["time", "step", "epoch", "kind"]

    # -- stopped after its first epoch (as if killed), resumed from disk: bit-identical
    # -- to `full` (tasks come from fold_in(root key, step); the whole MetaState is
    # -- checkpointed synchronously). A killed run may have logged past its last
    # -- checkpoint: resume must drop that. The stop here is --max-minutes' epoch-end
    # -- stop (a limit passed by the first epoch); --stop-after: test_train_distributed.py. ---
    capsys.readouterr()
    first = train.train_and_evaluate(cfg, resumed, progress=False, max_minutes=1e-5)
    assert first["epochs_done"] == 1 and not first["finished"]
    assert first["stopped_by"] == "max_minutes"
    assert "stopping after epoch 1: another epoch" in capsys.readouterr().err
    assert not json.loads((resumed / "train_summary.json").read_text())["finished"]
    with (resumed / "metrics.jsonl").open("a") as f:
        f.write(json.dumps({"step": 99, "epoch": 9, "kind": "train", "loss": 0.0}) + "\n{trunc")
    capsys.readouterr()
    compiled = parallel.jit_train_steps._cache_size()
    assert train.main(["--config", _write_tiny_config(tmp_path), "--workdir", str(resumed),
                       "--no-progress"]) == 0
    assert "resumed from" in capsys.readouterr().err
    # The restored state hits the step compiled for the fresh one (same avals, shardings
    # and committedness): resuming in-process does not recompile.
    assert parallel.jit_train_steps._cache_size() == compiled
    a, b = final_state(full), final_state(resumed)
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert jax.tree.structure(a) == jax.tree.structure(b) and len(la) == len(lb)
    for x, y in zip(la, lb, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert int(a.step) == 6
    assert [r["val_accuracy"] for r in val_records(full)] == \
        [r["val_accuracy"] for r in val_records(resumed)]
    steps = [r["step"] for r in
             map(json.loads, (resumed / "metrics.jsonl").read_text().splitlines())]
    assert 99 not in steps and steps == sorted(steps)

    # -- best-k retention: keep_best=1 plus the latest ------------------------------------
    vals = {r["step"]: r["val_accuracy"] for r in val_records(full)}
    kept = sorted(int(p.name) for p in (full / "checkpoints").iterdir() if p.name.isdigit())
    assert 6 in kept and len(kept) <= cfg["keep_best"] + 1
    removed = set(vals) - set(kept)
    assert removed
    assert all(vals[s] <= max(vals[k] for k in kept) for s in removed)

    # -- a changed config is refused in an existing workdir ---------------------------------
    with pytest.raises(config_lib.ConfigError, match="num_filters"):
        train.train_and_evaluate(dict(cfg, num_filters=8), full, progress=False)

    # -- evaluate (best + ensemble) and compare --------------------------------------------
    res = evaluate.run_evaluation(full)
    capsys.readouterr()
    assert evaluate.main(["--workdir", str(resumed)]) == 0
    assert "top-" in capsys.readouterr().out
    saved = json.loads((full / "test_results.json").read_text())
    assert saved["num_test_tasks"] == 8
    assert res["ensemble"]["size"] == min(2, len(kept))
    best = res["best"]
    ranked = checkpoints.ranked_checkpoints(checkpoints.checkpoint_manager(full, 1, read_only=True))
    assert best["step"] == ranked[0][0]
    assert len(best["per_step_accuracy_pct"]) == 3   # before adaptation + 2 steps
    # the ensemble path (final logits) agrees with the library's per-step evaluation
    assert best["test_accuracy_pct"] == pytest.approx(best["per_step_accuracy_pct"][-1], abs=1e-4)
    assert (full / "per_step_accuracy.png").is_file() and (full / "inner_lrs_best.png").is_file()
    other = json.loads((resumed / "test_results.json").read_text())
    assert other["best"] == saved["best"]
    assert (tmp_path / "compare_per_step_accuracy.png").is_file()
    out = tmp_path / "cmp.png"
    assert compare.main([str(full), str(resumed), "--out", str(out)]) == 0
    assert out.is_file()

    # -- the claims study on Omniglot workdirs (the sinusoid path: test_study.py) ----------
    res = study.run_study([full, resumed, tmp_path / "nothing"], tmp_path / "study")
    g = res["groups"]["5w1s/tiny"]
    assert g["seeds"] == [0, 0] and g["pooled"]["evaluated_steps"] == 4   # 2N
    assert g["pooled"]["num_tasks"] == 16 and len(g["pooled"]["accuracy_mean"]) == 5
    # the study's accuracy after N steps is evaluate's per-step accuracy of the best checkpoint
    assert 100 * g["per_seed"][0]["final_accuracy"] == pytest.approx(
        best["per_step_accuracy_pct"][-1], abs=1e-4)
    assert g["seed_std_final_accuracy"] == 0.0   # the same run twice
    assert [f["workdir"] for f in res["failed"]] == [str(tmp_path / "nothing")]
    assert (tmp_path / "study" / "trajectories_5w1s.png").is_file()
    assert "inner_lrs_tiny_5w1s.png" in res["plots"]
    # A second study reads each run's cached evaluation (study_eval.npz), same numbers;
    # a cache for another checkpoint is not used.
    assert (full / study_runs.STUDY_CACHE).is_file()
    again = study.run_study([full, resumed], tmp_path / "study2")
    assert again["groups"]["5w1s/tiny"]["pooled"] == g["pooled"]
    with np.load(full / study_runs.STUDY_CACHE) as c:
        np.savez(full / study_runs.STUDY_CACHE, losses=c["losses"] + 1, accuracy=c["accuracy"],
                 key=str(c["key"]).replace('"step": ', '"step": 1'))
    third = study.run_study([full], tmp_path / "study3")
    assert third["groups"]["5w1s/tiny"]["pooled"]["final_mean"] == pytest.approx(
        g["per_seed"][0]["final_mean"])


def _ranked_by_epoch(monkeypatch, accuracies):
    """Validation reports ``accuracies[e]`` after epoch ``e`` (the real validation runs, its
    accuracy is replaced), so that the best checkpoint is the one the test chooses."""
    real = task_metrics.validate_population

    def fake(setup, cfg, state, tasks, mesh=None):
        out = real(setup, cfg, state, tasks, mesh)
        epoch = int(parallel.host_array(state.step).reshape(-1)[0]) // cfg["iterations_per_epoch"]
        return {**out, "val_accuracy": accuracies[epoch - 1]}

    monkeypatch.setattr(task_metrics, "validate_population", fake)


@TINY_GROUP
def test_resume_continues_from_the_latest_checkpoint_not_the_best(tmp_path, monkeypatch,
                                                                   capsys):
    """A stopped run whose best checkpoint (epoch 1) is not its latest (epoch 2) resumes from
    the latest: it trains only the remaining epoch. The same run checks derivative-order
    annealing end to end: TINY's ``first_order_epochs=1`` makes epoch 0 first order, the
    rest second order, in the step that runs (the records log the phase passed to it)."""
    cfg = tiny_config()
    assert cfg["first_order_epochs"] == 1
    work = tmp_path / "run"
    _ranked_by_epoch(monkeypatch, [0.9, 0.5, 0.1])
    first = train.train_and_evaluate(cfg, work, progress=False, stop_after=2)
    assert first["step"] == 4 and not first["finished"] and first["resumed_from_step"] is None
    mngr = checkpoints.checkpoint_manager(work, cfg["keep_best"], read_only=True)
    try:
        assert checkpoints.ranked_checkpoints(mngr)[0] == (2, 0.9)   # best: epoch 1
        assert mngr.latest_step() == 4
    finally:
        mngr.close()

    calls = []
    real_steps = parallel.jit_train_steps

    def counting(state, *args, **kwargs):
        calls.append(int(parallel.host_array(state.step).reshape(-1)[0]))
        return real_steps(state, *args, **kwargs)

    monkeypatch.setattr(parallel, "jit_train_steps", counting)
    capsys.readouterr()
    second = train.train_and_evaluate(cfg, work, progress=False)
    assert "at step 4 (epoch 2)" in capsys.readouterr().err
    assert second["resumed_from_step"] == 4 and second["finished"] and second["step"] == 6
    assert calls == [4]   # one host call of 2 steps: epoch 3 only, from the latest state
    assert [(r["step"], r["val_accuracy"]) for r in val_records(work)] == \
        [(2, 0.9), (4, 0.5), (6, 0.1)]
    phases = [(r["epoch"], r["first_order"]) for r in records(work, "train")]
    assert phases == [(0, True), (1, False), (2, False)]
    assert int(final_state(work).step) == 6


@pytest.mark.slow
@TINY_GROUP
def test_population_members_are_the_single_runs_of_their_seeds(tmp_path):
    """``num_seeds=2``: member ``i`` of the population is the single run with ``seed + i``
    (its own initialisation and task stream), and the two members differ."""
    cfg = tiny_config(seed=3)
    pop = train.train_and_evaluate({**cfg, "num_seeds": 2}, tmp_path / "pop", progress=False,
                                   stop_after=1)
    assert pop["num_seeds"] == 2 and pop["step"] == 2
    population = final_state(tmp_path / "pop")
    members = [parallel.unstack_state(population, i) for i in range(2)]
    # Member 1 against the single run of seed 4: a population that gave every member the
    # first seed would pass a comparison of member 0 (one single run keeps CI time).
    train.train_and_evaluate({**cfg, "seed": 4}, tmp_path / "seed4", progress=False,
                             stop_after=1)
    single = final_state(tmp_path / "seed4")
    np.testing.assert_array_equal(np.asarray(members[1].rng), np.asarray(single.rng))
    for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(members[1])[0],
                            jax.tree.leaves(single), strict=True):
        name = jax.tree_util.keystr(path)
        if "['conv" in name and name.endswith("['bias']"):
            # A conv bias feeds a batch norm with batch statistics: its gradient is rounding
            # noise (exactly 0 in exact arithmetic), which Adam scales up to lr-sized
            # steps, so vmap's rounding moves it differently. Checked: finite.
            assert np.all(np.isfinite(np.asarray(a))), name
            continue
        if "model_state" in name and name.endswith("['mean']"):
            # The running mean after a convolution contains that convolution's bias (above):
            # at most a few Adam steps of it (2 steps at 1e-3, momentum 0.1) apart.
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=5e-4, err_msg=name)
            continue
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6,
                                   err_msg=name)
    assert not np.array_equal(np.asarray(members[0].rng), np.asarray(members[1].rng))
    for layer in ("conv0", "conv3", "head"):   # Xavier draws of different init keys
        assert not np.allclose(members[0].meta_params["params"][layer]["kernel"],
                               members[1].meta_params["params"][layer]["kernel"]), layer


@TINY_GROUP
def test_nonfinite_loss_stops_without_checkpoint(tmp_path, capsys):
    cfg = tiny_config()
    images, splits = datasets.load_images(cfg, None)
    images = images.copy()
    images[:, :, 3, 3] = np.nan
    with pytest.raises(Exception) as info:
        train.train_and_evaluate(cfg, tmp_path / "nan", progress=False, images=(images, splits))
    assert type(info.value).__name__ == "NonFiniteLossError"
    assert "non-finite" in str(info.value)
    ckpt = tmp_path / "nan" / "checkpoints"
    assert not ckpt.exists() or not [p for p in ckpt.iterdir() if p.name.isdigit()]


@pytest.mark.slow
def test_plain_maml_config_trains_and_evaluates(tmp_path, monkeypatch, capsys):
    """The MAML preset (fixed scalar alpha, final-step loss, shared BN, constant meta lr)
    trains (evaluation of a workdir: test_train_resume_evaluate_end_to_end).

    Its first call also checks --max-minutes when one epoch overruns the limit: it stops
    mid-epoch after validating and checkpointing (the epoch-end stop:
    test_train_resume_evaluate_end_to_end), and the fallback without tensorboardX (not on
    the GPU image); the second call resumes and finishes, with the same compiled step."""
    cfg = config_lib.validate_config(config_lib.maml_config(
        5, 1, **{**TINY, "name": "tiny_maml", "first_order_epochs": 0,
                 "meta_batch_size": 2, "num_inner_steps": 1,
                 "num_inner_steps_eval": 3, "split": "reference", "num_epochs": 2,
                 "iterations_per_epoch": 4}))
    assert not cfg["msl"] and not cfg["learn_inner_lrs"] and not cfg["per_step_bn"]
    work = tmp_path / "maml"
    with pytest.raises(config_lib.ConfigError, match="max-minutes"):
        train.train_and_evaluate(cfg, tmp_path / "bad", progress=False, max_minutes=-1)
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "tensorboardX", None)  # import raises ImportError
        summary = train.train_and_evaluate(cfg, work, progress=False, max_minutes=1e-5)
    assert summary["stopped_by"] == "max_minutes" and summary["step"] == 2
    assert not summary["finished"] and [r["step"] for r in val_records(work)] == [2]
    assert not (work / "tensorboard").exists() and (work / "metrics.csv").is_file()
    err = capsys.readouterr().err
    assert "tensorboardX is not installed" in err and "mid-epoch 1" in err
    assert final_state(work).step == 2  # the checkpoint evaluate reads
    summary = train.train_and_evaluate(cfg, work, progress=False)   # resumes mid-epoch
    assert summary["finished"] and summary["stopped_by"] is None
    assert [r["step"] for r in val_records(work)] == [2, 4, 8]
    state = final_state(work)
    init = wiring.init_state(cfg, wiring.get_setup(cfg))
    # alpha stays the configured scalar; BN weights are shared across steps; weights moved.
    for lr in jax.tree.leaves(state.meta_params["inner_lrs"]):
        assert lr.shape == () and float(lr) == pytest.approx(cfg["inner_lr"])
    assert state.meta_params["params"]["norm0"]["scale"].shape == (4,)
    assert state.model_state["norm0"]["mean"].shape == (4,)
    assert not np.allclose(state.meta_params["params"]["conv1"]["kernel"],
                           init.meta_params["params"]["conv1"]["kernel"])
    for r in records(work, "train"):  # final-step loss only: one inner step, no MSL
        assert len(r["per_step_loss"]) == 1 and not r["msl"]
        assert r["meta_lr"] == pytest.approx(cfg["meta_lr"])


def _write_tiny_config(tmp_path):
    path = tmp_path / "tiny_cfg.py"
    path.write_text("from experiments.config_lib import mamlpp_config\n"
                    f"def get_config(arg=None):\n    return mamlpp_config(5, 1, **{TINY!r})\n")
    return str(path)


@pytest.mark.parametrize("overrides, message", [
    (["num_ways=30"], "30-way"),                       # more ways than the val split has
    (["k_shot=15", "q_query=6"], "15 + 6 = 21"),       # K + Q > 20 drawings
    (["q_query_eval=20"], "21"),
    (["rate_update=softplus"],
     "rate_update must be auto|reference|log_10x|log|reference_0.1x, got 'softplus'"),
    (["inner_loop=trunk"], "inner_loop must be all|head|body, got 'trunk'"),
    (["lr_granularity=per_weight"], "got 'per_weight'"),
    (["rate_update=log", "inner_lr=0.0"], "inner_lr must be > 0 when the rates are learned"),
    (["lr_granularity=meta_sgd", "inner_lr=-0.1"], "lr_granularity='meta_sgd'), got -0.1"),
])
def test_bad_requests_fail_before_compiling(tmp_path, capsys, overrides, message):
    argv = ["--config", _write_tiny_config(tmp_path), "--workdir", str(tmp_path / "w"),
            "--no-progress"] + [f"--config.{o}" for o in overrides]
    assert train.main(argv) == 2
    err = capsys.readouterr().err
    assert "error:" in err and message in err
    assert not (tmp_path / "w" / "checkpoints").exists()


def test_missing_data_dir_message(tmp_path, capsys):
    argv = ["--config", _write_tiny_config(tmp_path), "--workdir", str(tmp_path / "w"),
            "--config.data=omniglot", "--data-dir", str(tmp_path / "no_such_dir")]
    assert train.main(argv) == 2
    err = capsys.readouterr().err
    assert "--data-dir" in err and "MAML_JAX_DATA_DIR" in err and "no_such_dir" in err


def test_resume_flag_without_checkpoint(tmp_path, capsys):
    argv = ["--config", _write_tiny_config(tmp_path), "--workdir", str(tmp_path / "w"), "--resume"]
    assert train.main(argv) == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_cli_subprocess_error_exit_code(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.train", "--config", _write_tiny_config(tmp_path),
         "--workdir", str(tmp_path / "w"), "--config.num_ways=40"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2 and "40-way" in proc.stderr
