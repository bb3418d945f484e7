"""Tests of the experiment scripts (experiments/): tiny network, synthetic glyphs, CPU.

One tiny config is compiled once per process (the experiments cache their jitted objects
per config) and reused by the training / evaluation tests.

The wiring tests observe an end result that a plausible wiring mistake changes: a split
whose images are all one picture (so any model scores exactly chance on it), training
rotations visible in the sampled tasks, an ensemble recomputed from its members' logits,
a plain-MAML config run end to end; the end-to-end test stops a run after its first
epoch and resumes it from what it left on disk.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import (
    checkpoints,
    compare,
    config_lib,
    datasets,
    evaluate,
    evaluation,
    flag_parsing,
    study,
    train,
    wiring,
)
from maml_jax import parallel
from maml_jax.data import episodes

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "experiments" / "configs"

# Derivative-order annealing over the first epoch: the tiny runs go through a first-order
# and a second-order step, and their records show which one ran when.
TINY = dict(name="tiny", data="synthetic", synthetic_num_classes=30,
            synthetic_counts=(20, 5, 5), num_filters=4, num_inner_steps=2,
            num_inner_steps_eval=2, meta_batch_size=2, num_epochs=3, iterations_per_epoch=2,
            steps_per_call=2, num_val_tasks=8, num_test_tasks=8, keep_best=1, ensemble_size=2,
            first_order_epochs=1)


def tiny_config(**updates):
    return config_lib.validate_config(config_lib.mamlpp_config(5, 1, **{**TINY, **updates}))


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


def _records(workdir, kind):
    lines = (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def val_records(workdir):
    return _records(workdir, "val")


# Tests that train tiny_config() exactly share its compiled functions (wiring.get_setup's
# cache) when they run in one worker: one group, in file order.
TINY_GROUP = pytest.mark.xdist_group("tiny_config")


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
    # -- stop (a limit passed by the first epoch); --stop-after: test_parallel.py. --------
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
    assert (full / study.STUDY_CACHE).is_file()
    again = study.run_study([full, resumed], tmp_path / "study2")
    assert again["groups"]["5w1s/tiny"]["pooled"] == g["pooled"]
    with np.load(full / study.STUDY_CACHE) as c:
        np.savez(full / study.STUDY_CACHE, losses=c["losses"] + 1, accuracy=c["accuracy"],
                 key=str(c["key"]).replace('"step": ', '"step": 1'))
    third = study.run_study([full], tmp_path / "study3")
    assert third["groups"]["5w1s/tiny"]["pooled"]["final_mean"] == pytest.approx(
        g["per_seed"][0]["final_mean"])


def _ranked_by_epoch(monkeypatch, accuracies):
    """Validation reports ``accuracies[e]`` after epoch ``e`` (the real validation runs, its
    accuracy is replaced), so that the best checkpoint is the one the test chooses."""
    real = evaluation.validate_population

    def fake(setup, cfg, state, tasks, mesh=None):
        out = real(setup, cfg, state, tasks, mesh)
        epoch = int(parallel.host_array(state.step).reshape(-1)[0]) // cfg["iterations_per_epoch"]
        return {**out, "val_accuracy": accuracies[epoch - 1]}

    monkeypatch.setattr(evaluation, "validate_population", fake)


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
    phases = [(r["epoch"], r["first_order"]) for r in _records(work, "train")]
    assert phases == [(0, True), (1, False), (2, False)]
    assert int(final_state(work).step) == 6


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


# ---------------------------------------------------------------------------------------
# wiring: splits, ensemble, rotations, plain MAML
# ---------------------------------------------------------------------------------------

def _one_picture(images, classes):
    """Every drawing of ``classes`` replaced by one fixed picture: a model sees identical
    query images in every class of such a task, so its accuracy is exactly 1/ways."""
    out = images.copy()
    out[classes] = images[classes[0], 0]
    return out


def test_validation_and_test_tasks_come_from_their_own_classes(tmp_path, monkeypatch):
    # 8 filters and 20 steps: enough for the model to beat chance, so that a split whose
    # pictures are all one is told apart from a real one.
    cfg = tiny_config(num_epochs=4, iterations_per_epoch=5, steps_per_call=5, num_filters=8,
                      keep_best=3, ensemble_size=3, num_val_tasks=6, num_test_tasks=12)
    images, splits = datasets.load_images(cfg, None)
    calls = []
    fixed_tasks = episodes.fixed_tasks

    def spy(split_images, **kw):
        calls.append((np.asarray(split_images), kw))
        return fixed_tasks(split_images, **kw)

    monkeypatch.setattr(episodes, "fixed_tasks", spy)
    work = tmp_path / "run"
    train.train_and_evaluate(cfg, work, progress=False,
                       images=(_one_picture(images, splits["val"]), splits))
    val = _records(work, "val")
    assert len(val) == 4
    for r in val:  # drawn from the validation classes, not from the training ones
        assert r["val_accuracy"] == pytest.approx(0.2, abs=1e-6)
        assert r["val_accuracy_per_step"] == pytest.approx([0.2] * 3, abs=1e-6)
    assert max(r["accuracy"] for r in _records(work, "train")) > 0.4  # training is not
    (val_images, val_kw), = calls
    np.testing.assert_array_equal(val_images, _one_picture(images, splits["val"])[splits["val"]])
    assert (val_kw["seed"], val_kw["num_tasks"]) == (cfg["val_seed"], cfg["num_val_tasks"])

    # Test tasks come from the test classes (not val, not train).
    calls.clear()
    res = evaluate.run_evaluation(work, images=(_one_picture(images, splits["test"]), splits),
                                  compare_siblings=False)
    assert res["best"]["test_accuracy_pct"] == pytest.approx(20.0, abs=1e-4)
    assert res["ensemble"]["test_accuracy_pct"] == pytest.approx(20.0, abs=1e-4)
    clean = evaluate.run_evaluation(work, images=(images, splits), compare_siblings=False)
    assert clean["best"]["test_accuracy_pct"] > 30
    test_images, test_kw = calls[-1]
    np.testing.assert_array_equal(test_images, images[splits["test"]])
    assert (test_kw["seed"], test_kw["num_tasks"]) == (cfg["test_seed"], cfg["num_test_tasks"])
    assert cfg["test_seed"] != cfg["val_seed"]

    # The ensemble is the mean of its members' final-step logits.
    ens = clean["ensemble"]
    assert ens["size"] == 3 and len(set(ens["steps"])) == 3
    setup = wiring.get_setup(cfg)
    (xs, ys), (xq, yq) = datasets.fixed_eval_tasks(jnp.asarray(images[splits["test"]]), cfg, "test")
    mngr = checkpoints.checkpoint_manager(work, cfg["keep_best"], read_only=True)
    template = wiring.init_state(cfg, setup)
    member_logits = []
    try:
        for step in ens["steps"]:
            mp = checkpoints.restore_checkpoint(mngr, step, template)[0].meta_params
            member_logits.append(np.asarray(setup.final_logits(mp["params"], mp["inner_lrs"],
                                                               (xs, ys), xq)))
    finally:
        mngr.close()
    assert not np.allclose(member_logits[0], member_logits[-1])  # distinct members
    mean_logits = np.mean(member_logits, axis=0)
    want = 100 * (mean_logits.argmax(-1) == np.asarray(yq)).mean(axis=1)
    np.testing.assert_allclose(ens["per_task_accuracy_pct"], want, atol=1e-3)
    assert ens["test_accuracy_pct"] == pytest.approx(want.mean(), abs=1e-4)
    # The comparison can tell the ensemble from each of its members.
    for logits in member_logits:
        single = 100 * (logits.argmax(-1) == np.asarray(yq)).mean(axis=1)
        assert not np.array_equal(single, want)


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
    for r in _records(work, "train"):  # final-step loss only: one inner step, no MSL
        assert len(r["per_step_loss"]) == 1 and not r["msl"]
        assert r["meta_lr"] == pytest.approx(cfg["meta_lr"])


# ---------------------------------------------------------------------------------------
# configs and command-line errors (nothing is compiled)
# ---------------------------------------------------------------------------------------

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


def _write_tiny_config(tmp_path):
    path = tmp_path / "tiny_cfg.py"
    path.write_text("from experiments.config_lib import mamlpp_config\n"
                    f"def get_config(arg=None):\n    return mamlpp_config(5, 1, **{TINY!r})\n")
    return str(path)


@pytest.mark.parametrize("overrides, message", [
    (["num_ways=30"], "30-way"),                       # more ways than the val split has
    (["k_shot=15", "q_query=6"], "15 + 6 = 21"),       # K + Q > 20 drawings
    (["q_query_eval=20"], "21"),
    (["rate_update=softplus"], "rate_update must be auto|reference|log, got 'softplus'"),
    (["inner_loop=body"], "inner_loop must be all|head, got 'body'"),
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


def test_steps_per_call_divides_epoch():
    assert wiring.steps_per_call(tiny_config(iterations_per_epoch=500, steps_per_call=48)) == 25
    assert wiring.steps_per_call(tiny_config(iterations_per_epoch=7, steps_per_call=50)) == 7
