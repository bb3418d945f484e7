"""Every config key reaches what it claims to configure (experiments/wiring.py and the
paths that read a config: data loading, training, evaluation).

A key that is accepted, validated and then dropped gives silently wrong experiments (a
population whose seeds are all one seed, derivative-order annealing that never happens).
So each key of ``config_lib.base_config`` is listed in ``KEY_CHECKS`` with the observers of
the code it claims to configure, and changing it must change what each observer sees:
the model, the ``MetaConfig``, the optimizer's updates, the sampled tasks, the evaluation
program, the initial state, the data loaders' arguments, and what training and evaluation
hand their collaborators. A new key without an entry fails ``test_every_config_key_is_checked``.

Nothing here compiles a training step: observers trace (``jax.make_jaxpr``) or run small
pieces eagerly, and training / evaluation are stopped at their first checkpoint access.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import maml_jax as mj
from experiments import (
    checkpoints,
    config_lib,
    datasets,
    evaluate,
    plots,
    sinusoid,
    task_metrics,
    train,
    wiring,
)
from maml_jax import meta
from maml_jax.data import image_folder, miniimagenet, omniglot, tfds_omniglot
from tests.support.tiny_runs import wiring_config


def _digest(tree) -> str:
    """sha256 of a pytree's shapes, dtypes and values (host arrays)."""
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(tree):
        x = np.asarray(leaf)
        h.update(f"{x.shape}{x.dtype}".encode())
        h.update(np.ascontiguousarray(x).tobytes())
    return h.hexdigest()


# ------------------------------------------------------------------------------ observers
# Each takes a checked config (and pytest's monkeypatch / tmp_path) and returns something
# comparable: what that part of the code was given or computed from the config.

def observe_model(cfg, mp, tmp):
    model = wiring.get_setup(cfg).model
    return {f.name: getattr(model, f.name) for f in dataclasses.fields(model)
            if f.name not in ("parent", "name")}


def observe_meta_config(cfg, mp, tmp):
    return wiring.get_setup(cfg).meta_config


def observe_host_loop(cfg, mp, tmp):
    return wiring.get_setup(cfg).steps_per_call


def observe_optimizer(cfg, mp, tmp):
    """The schedule the run reports and the updates the optimizer makes over 8 steps of
    a fixed gradient sequence (large entries that clipping would cut)."""
    setup = wiring.get_setup(cfg)
    params = {"params": {"w": jnp.zeros(3)}, "inner_lrs": {"w": jnp.full((), 0.1)}}
    state = setup.optimizer.init(params)
    updates = []
    for t in range(8):
        g = {"params": {"w": jnp.array([20.0 * (t + 1), -0.5, 3.0])},
             "inner_lrs": {"w": jnp.array(0.1 * (t + 1))}}
        u, state = setup.optimizer.update(g, state, params)
        params = jax.tree.map(lambda p, d: p + d, params, u)
        updates.append(jax.tree.map(np.asarray, u))
    schedule = [float(setup.lr_schedule(s)) for s in (0, 1, 2, 3, 4, 5, 6, 10, 100, 10**4)]
    return _digest(updates), schedule


_GLYPHS = datasets.synthetic_images(12, 28, seed=5)


def observe_sampler(cfg, mp, tmp):
    sample = wiring.get_setup(cfg).sample_fn(jax.random.PRNGKey(0), jnp.asarray(_GLYPHS))
    return _digest(sample)


def _abstract_state(cfg):
    setup = wiring.get_setup(cfg)
    return jax.eval_shape(lambda: wiring.init_population(cfg, setup))


def observe_eval_program(cfg, mp, tmp):
    """The traced program of the test-time adaptation (inner steps, task batching), and
    the batch size the validation path uses."""
    setup = wiring.get_setup(cfg)
    mp_abs = _abstract_state(cfg).meta_params
    s, c, w = cfg["image_size"], cfg["image_channels"], cfg["num_ways"]
    n = 6
    xs = jax.ShapeDtypeStruct((n, w * cfg["k_shot"], s, s, c), jnp.float32)
    ys = jax.ShapeDtypeStruct((n, w * cfg["k_shot"]), jnp.int32)
    xq = jax.ShapeDtypeStruct((n, w * cfg["q_query_eval"], s, s, c), jnp.float32)
    jaxpr = jax.make_jaxpr(setup.final_logits)(mp_abs["params"], mp_abs["inner_lrs"],
                                               (xs, ys), xq)
    return str(jaxpr), wiring.eval_batch_size(cfg)


def observe_validation_call(cfg, mp, tmp):
    """The keyword arguments validation hands ``meta.jit_evaluate_tasks`` (recorded, not
    run)."""
    calls = []

    def record(*args, **kwargs):
        calls.append(kwargs)
        return jnp.zeros((2, 3)), {"accuracy": jnp.zeros((2, 3))}

    mp.setattr(meta, "jit_evaluate_tasks", record)
    task_metrics.evaluate_params(wiring.get_setup(cfg), cfg, {"params": {}, "inner_lrs": {}},
                                 tasks=None)
    return calls


def observe_init(cfg, mp, tmp):
    return _digest(wiring.init_population(cfg, wiring.get_setup(cfg)))


def observe_data(cfg, mp, tmp):
    """What ``datasets.load_images`` gives the data sources (fakes that record their
    arguments stand in for the Omniglot, TFDS, mini-ImageNet and image-folder readers),
    and what it returns."""
    calls = []

    def recorder(name, result):
        def fn(*args, **kwargs):
            calls.append((name, args, tuple(sorted(kwargs.items()))))
            return result() if callable(result) else result
        return fn

    s, c = cfg["image_size"], cfg["image_channels"]
    glyphs = lambda: types.SimpleNamespace(images=np.zeros((3, 20, s, s), np.float32),
                                           class_names=["a", "b", "c"])
    ds = lambda: types.SimpleNamespace(data=np.zeros((3, 20, s, s, c), np.uint8),
                                       splits={"train": [0], "val": [1], "test": [2]})
    splits = {"train": np.array([0]), "val": np.array([1]), "test": np.array([2])}
    mp.setattr(omniglot, "load_omniglot", recorder("omniglot", glyphs))
    mp.setattr(tfds_omniglot, "load_tfds_omniglot", recorder("tfds", glyphs))
    mp.setattr(miniimagenet, "load_miniimagenet", recorder("miniimagenet", ds))
    mp.setattr(image_folder, "load_image_folder", recorder("image_folder", ds))
    mp.setattr(image_folder, "check_split_request", recorder("check_split", None))
    real_split = omniglot.split_classes

    def split_classes(num_classes, preset="reference", seed=0, **kw):
        calls.append(("split_classes", (num_classes, preset, seed), tuple(sorted(kw.items()))))
        return splits if preset != "custom" else real_split(num_classes, preset, seed, **kw)

    mp.setattr(omniglot, "split_classes", split_classes)
    images, out_splits = datasets.load_images(cfg, str(tmp / "data"))
    images = getattr(images, "images", images) if not isinstance(images, np.ndarray) else images
    return calls, _digest((images, out_splits))


class _Stop(Exception):
    """Raised by a recording fake to end a run at the point being observed."""


def observe_training_run(cfg, mp, tmp):
    """What ``train.train_and_evaluate`` has built when it opens the checkpoints: the
    validation tasks, the mesh (or the error refusing it), and the manager's arguments."""
    seen = {}
    real_place = train._place_data

    def place(images, splits, cfg_, mesh):
        train_images, val_tasks = real_place(images, splits, cfg_, mesh)
        seen["val_tasks"] = _digest(val_tasks)
        return train_images, val_tasks

    def manager(workdir, keep_best, read_only=False):
        seen["checkpoint_manager"] = (keep_best, read_only)
        raise _Stop

    mp.setattr(train, "_place_data", place)
    mp.setattr(checkpoints, "checkpoint_manager", manager)
    try:
        train.train_and_evaluate(cfg, tmp / "train", progress=False)
    except _Stop:
        pass
    except config_lib.ConfigError as err:
        seen["error"] = str(err)
    return seen


def observe_evaluation_run(cfg, mp, tmp):
    """What ``evaluate.run_evaluation`` evaluates on (test tasks, ensemble size, ranked
    checkpoints) and reports (name, paper number), with the checkpoints faked."""
    work = tmp / "eval"
    work.mkdir(exist_ok=True)
    (work / checkpoints.CONFIG_FILE).write_text(config_lib.config_to_json(cfg))
    seen = {}
    ranked = [(12, 0.9), (10, 0.8), (8, 0.7), (6, 0.6), (4, 0.5), (2, 0.4)]

    def evaluate_seed(run, ens, tasks, index):
        seen.setdefault("per_seed", []).append((ens, run.ranked, _digest(tasks)))
        result = {"step": run.ranked[0][0], "test_accuracy_pct": 50.0, "test_ci95_pct": 1.0,
                  "per_step_accuracy_pct": [20.0, 50.0], "per_step_ci95_pct": [1.0, 1.0]}
        return {"seed": run.cfg["seed"] + index, "best": result,
                "ensemble": {**result, "size": min(ens, len(run.ranked))}, "members": []}

    mp.setattr(checkpoints, "checkpoint_manager",
               lambda workdir, keep_best, read_only=False: types.SimpleNamespace(
                   close=lambda: None))
    mp.setattr(checkpoints, "ranked_checkpoints", lambda mngr: ranked)
    mp.setattr(evaluate, "_evaluate_seed", evaluate_seed)
    mp.setattr(plots, "plot_per_step_accuracy", lambda curves, path: None)
    results = evaluate.run_evaluation(work, compare_siblings=False)
    return seen, {k: v for k, v in results.items() if k not in ("best", "ensemble")}


def observe_sinusoid_evaluation(cfg, mp, tmp):
    """The fixed test tasks ``sinusoid.evaluate_sinusoid`` asks for and what it hands
    ``jit_evaluate_tasks`` (recorded, not run)."""
    calls = []
    real_tasks = mj.sinusoid_eval_tasks

    def tasks(*args):
        calls.append(("tasks", args))
        return real_tasks(*args)

    def evaluate(loss_fn, params, inner_lrs, tasks_, **kwargs):
        calls.append(("evaluate", _digest(tasks_), sorted(kwargs.items())))
        return jnp.zeros((2, kwargs["num_steps"] + 1)), {}

    mp.setattr(mj, "sinusoid_eval_tasks", tasks)
    mp.setattr(mj, "jit_evaluate_tasks", evaluate)
    sinusoid.evaluate_sinusoid(cfg, {"params": {}, "inner_lrs": {}})
    return calls


def observe_sinusoid_report(cfg, mp, tmp):
    """The table and plots ``sinusoid.run_comparison`` makes of a method's test losses
    (training and testing faked: losses 1 + step / 10 on two tasks)."""
    plotted = []
    mp.setattr(sinusoid, "train_sinusoid",
               lambda c, **kw: sinusoid.SinusoidRun({"inner_lrs": {}}, [], 0.0))
    mp.setattr(sinusoid, "evaluate_sinusoid", lambda c, params: {
        k: np.tile(1.0 + np.arange(c["num_inner_steps_eval"] + 1) / 10, (2, 1))
        for k in c["sinusoid_eval_shots"]})
    # the trajectory plot shows every step adapted, the table the reported ones
    mp.setattr(sinusoid, "make_plots", lambda evals, *args, **kwargs: plotted.append(
        (jax.tree.map(np.shape, evals), kwargs)) or [])
    result = sinusoid.run_comparison({cfg["name"]: cfg}, tmp / "out")
    table = (tmp / "out" / "results.md").read_text().split("Query MSE", 1)[1]
    return result["test_mse"], plotted, table


# ------------------------------------------------------------------------------- the table
# key -> (observers that must see a change, the changed value(s), the base's changes).
# "base" makes the key meaningful (an image-folder key needs data="image_folder").
IMAGE_FOLDER = {"data": "image_folder"}
MINIIMAGENET = {"data": "miniimagenet", "image_channels": 3}
SINUSOID = {"data": "sinusoid", "sinusoid_eval_steps": (1, 2)}   # num_inner_steps_eval 2
KEY_CHECKS = {
    "name": ((observe_evaluation_run,), {"name": "renamed"}, {}),
    "data": ((observe_data,), {"data": "omniglot"}, {}),
    "image_size": ((observe_data, observe_init), {"image_size": 32}, {}),
    "image_channels": ((observe_data, observe_init), {"image_channels": 3}, IMAGE_FOLDER),
    "image_resize": ((observe_data,), {"image_resize": True}, IMAGE_FOLDER),
    "split": ((observe_data,), {"split": "maml"}, {"data": "omniglot"}),
    "split_fractions": ((observe_data,), {"split_fractions": (0.6, 0.2, 0.2)}, IMAGE_FOLDER),
    "split_counts": ((observe_data,), {"split_counts": (10, 5, 5)}, IMAGE_FOLDER),
    "dataset_strict": ((observe_data,), {"dataset_strict": False}, MINIIMAGENET),
    "split_seed": ((observe_data,), {"split_seed": 3}, {}),
    "synthetic_num_classes": ((observe_data,),
                              {"synthetic_num_classes": 31, "synthetic_counts": (21, 5, 5)},
                              {}),
    "synthetic_counts": ((observe_data,), {"synthetic_counts": (15, 10, 5)}, {}),
    "synthetic_seed": ((observe_data,), {"synthetic_seed": 4}, {}),
    "rotate_train": ((observe_sampler,), {"rotate_train": False}, {}),
    "sinusoid_hidden": ((observe_model, observe_init), {"sinusoid_hidden": (8,)}, SINUSOID),
    "sinusoid_eval_shots": ((observe_sinusoid_evaluation, observe_sinusoid_report),
                            {"sinusoid_eval_shots": (3,)}, SINUSOID),
    "sinusoid_eval_steps": ((observe_sinusoid_report,), {"sinusoid_eval_steps": (0, 2)},
                            SINUSOID),
    "num_ways": ((observe_model, observe_sampler), {"num_ways": 3}, {}),
    "k_shot": ((observe_sampler,), {"k_shot": 2}, {}),
    "q_query": ((observe_sampler,), {"q_query": 2}, {}),
    "q_query_eval": ((observe_training_run, observe_evaluation_run),
                     {"q_query_eval": 2}, {}),
    "num_filters": ((observe_model, observe_init), {"num_filters": 8}, {}),
    "activation": ((observe_model,), {"activation": "relu"}, {}),
    "conv_impl": ((observe_model,), {"conv_impl": "xla"}, {}),
    "per_step_bn": ((observe_model, observe_init), {"per_step_bn": False}, {}),
    "num_inner_steps": ((observe_model, observe_meta_config, observe_init),
                        {"num_inner_steps": 3}, {}),
    "num_inner_steps_eval": ((observe_eval_program,), {"num_inner_steps_eval": 4}, {}),
    "inner_lr": ((observe_init,), {"inner_lr": 0.2}, {}),
    "lr_granularity": ((observe_init,), {"lr_granularity": "parameter"}, {}),
    "learn_inner_lrs": ((observe_meta_config,), {"learn_inner_lrs": False}, {}),
    "rate_update": ((observe_optimizer,), {"rate_update": "log"}, {}),
    "inner_loop": ((observe_init,), {"inner_loop": "body"}, {}),
    "algorithm": ((observe_meta_config, observe_validation_call),
                  {"algorithm": {"name": "reptile", "inner_optimizer": "adam"}}, {}),
    "inner_grad_clip": ((observe_meta_config, observe_eval_program, observe_validation_call),
                        {"inner_grad_clip": 5.0}, {}),
    "meta_batch_size": ((observe_sampler,), {"meta_batch_size": 3}, {}),
    "meta_lr": ((observe_optimizer,), {"meta_lr": 2e-3}, {}),
    "min_meta_lr": ((observe_optimizer,), {"min_meta_lr": 1e-4}, {}),
    "lr_schedule": ((observe_optimizer,), {"lr_schedule": "constant"}, {}),
    "clip_value": ((observe_optimizer,), {"clip_value": 10.0}, {}),
    "msl": ((observe_meta_config,), {"msl": False}, {}),
    "msl_epochs": ((observe_meta_config,), {"msl_epochs": 4}, {}),
    "first_order": ((observe_meta_config,), {"first_order": True}, {}),
    "first_order_epochs": ((observe_meta_config,), {"first_order_epochs": 2}, {}),
    "num_epochs": ((observe_optimizer,), {"num_epochs": 5}, {}),
    "iterations_per_epoch": ((observe_meta_config, observe_optimizer),
                             {"iterations_per_epoch": 4}, {}),
    "steps_per_call": ((observe_host_loop,), {"steps_per_call": 1}, {}),
    "task_batching": ((observe_meta_config,), {"task_batching": "map"}, {}),
    "task_groups": ((observe_meta_config,), {"task_groups": 2}, {}),
    "remat": ((observe_meta_config,), {"remat": True}, {}),
    "seed": ((observe_init,), {"seed": 1}, {}),
    "num_seeds": ((observe_init,), {"num_seeds": 2}, {}),
    "seed_shards": ((observe_training_run,), {"seed_shards": 2}, {"num_seeds": 2}),
    "num_val_tasks": ((observe_training_run,), {"num_val_tasks": 5}, {}),
    "num_test_tasks": ((observe_evaluation_run,), {"num_test_tasks": 5}, {}),
    "val_seed": ((observe_training_run,), {"val_seed": 7}, {}),
    "test_seed": ((observe_evaluation_run,), {"test_seed": 7}, {}),
    "eval_batch_size": ((observe_eval_program,), {"eval_batch_size": 3}, {}),
    "keep_best": ((observe_training_run,), {"keep_best": 3}, {}),
    "ensemble_size": ((observe_evaluation_run,), {"ensemble_size": 3}, {}),
    "paper_test_accuracy": ((observe_evaluation_run,), {"paper_test_accuracy": (99.0, 0.1)},
                            {}),
}


def test_every_config_key_is_checked():
    assert set(KEY_CHECKS) == set(config_lib.base_config()), (
        "every key of base_config needs an entry in KEY_CHECKS (which code it configures)")


@pytest.mark.parametrize("key", sorted(KEY_CHECKS))
def test_config_key_reaches_what_it_configures(key, monkeypatch, tmp_path):
    observers, changed, base = KEY_CHECKS[key]
    tmp = tmp_path / "observed"   # the same paths for both observations, emptied between

    def observe_with(observe, updates):
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        with monkeypatch.context() as mp:
            return observe(wiring_config(updates), mp, tmp)

    for observe in observers:
        before = observe_with(observe, base)
        after = observe_with(observe, {**base, **changed})
        assert before != after, (f"changing {key} to {changed[key]!r} changed nothing "
                                 f"{observe.__name__} sees")


# ------------------------------------------------------------------- the sinusoid path
# Every key a sinusoid run reads (data="sinusoid": wiring's MLP setup, experiments.sinusoid's
# evaluation and report) changes what it configures there too; the other keys are the image
# pipeline's, listed in SINUSOID_IGNORES.
SINUSOID_BASE = dict(name="tiny", sinusoid_hidden=(4,), meta_batch_size=2, num_epochs=3,
                     iterations_per_epoch=2, steps_per_call=2, num_inner_steps=2,
                     num_inner_steps_eval=2, sinusoid_eval_steps=(1, 2), sinusoid_eval_shots=(5,),
                     num_test_tasks=3, q_query_eval=4, lr_granularity="layer_step",
                     learn_inner_lrs=True, msl=True, lr_schedule="cosine")
SINUSOID_KEY_CHECKS = {
    "name": ((observe_sinusoid_report,), {"name": "renamed"}),
    "sinusoid_hidden": ((observe_model, observe_init), {"sinusoid_hidden": (8,)}),
    "k_shot": ((observe_sampler,), {"k_shot": 3}),
    "q_query": ((observe_sampler,), {"q_query": 3}),
    "meta_batch_size": ((observe_sampler,), {"meta_batch_size": 3}),
    "num_inner_steps": ((observe_meta_config, observe_init), {"num_inner_steps": 3}),
    "inner_lr": ((observe_init,), {"inner_lr": 0.2}),
    "lr_granularity": ((observe_init,), {"lr_granularity": "parameter"}),
    "inner_loop": ((observe_init,), {"inner_loop": "head"}),
    "algorithm": ((observe_meta_config, observe_sinusoid_evaluation),
                  {"algorithm": {"name": "reptile"}}),
    "seed": ((observe_init,), {"seed": 1}),
    "learn_inner_lrs": ((observe_meta_config,), {"learn_inner_lrs": False}),
    "msl": ((observe_meta_config,), {"msl": False}),
    "msl_epochs": ((observe_meta_config,), {"msl_epochs": 4}),
    "first_order": ((observe_meta_config,), {"first_order": True}),
    "first_order_epochs": ((observe_meta_config,), {"first_order_epochs": 2}),
    "task_batching": ((observe_meta_config,), {"task_batching": "map"}),
    "task_groups": ((observe_meta_config,), {"task_groups": 2}),
    "remat": ((observe_meta_config,), {"remat": True}),
    "inner_grad_clip": ((observe_meta_config, observe_sinusoid_evaluation),
                        {"inner_grad_clip": 5.0}),
    "rate_update": ((observe_optimizer,), {"rate_update": "log"}),
    "meta_lr": ((observe_optimizer,), {"meta_lr": 2e-3}),
    "min_meta_lr": ((observe_optimizer,), {"min_meta_lr": 1e-4}),
    "lr_schedule": ((observe_optimizer,), {"lr_schedule": "constant"}),
    "clip_value": ((observe_optimizer,), {"clip_value": 10.0}),
    "num_epochs": ((observe_optimizer,), {"num_epochs": 5}),
    "iterations_per_epoch": ((observe_meta_config, observe_optimizer),
                             {"iterations_per_epoch": 4}),
    "steps_per_call": ((observe_host_loop,), {"steps_per_call": 1}),
    "num_inner_steps_eval": ((observe_sinusoid_evaluation, observe_sinusoid_report),
                             {"num_inner_steps_eval": 3}),
    "num_test_tasks": ((observe_sinusoid_evaluation,), {"num_test_tasks": 5}),
    "q_query_eval": ((observe_sinusoid_evaluation,), {"q_query_eval": 6}),
    "test_seed": ((observe_sinusoid_evaluation,), {"test_seed": 7}),
    "sinusoid_eval_shots": ((observe_sinusoid_evaluation, observe_sinusoid_report),
                            {"sinusoid_eval_shots": (3,)}),
    "sinusoid_eval_steps": ((observe_sinusoid_report,), {"sinusoid_eval_steps": (0, 2)}),
}
# The image pipeline's keys ("data" selects the pipeline; one seed per sinusoid run).
SINUSOID_IGNORES = {
    "data", "image_size", "image_channels", "image_resize", "split", "split_fractions",
    "split_counts", "dataset_strict", "split_seed", "synthetic_num_classes", "synthetic_counts",
    "synthetic_seed", "rotate_train", "num_ways", "num_filters", "activation", "conv_impl",
    "per_step_bn", "num_seeds", "seed_shards", "num_val_tasks", "val_seed", "eval_batch_size",
    "keep_best", "ensemble_size", "paper_test_accuracy"}


def test_every_config_key_is_placed_for_sinusoids():
    assert not set(SINUSOID_KEY_CHECKS) & SINUSOID_IGNORES
    assert set(SINUSOID_KEY_CHECKS) | SINUSOID_IGNORES == set(config_lib.base_config())


@pytest.mark.parametrize("key", sorted(SINUSOID_KEY_CHECKS))
def test_config_key_reaches_what_it_configures_in_a_sinusoid_run(key, monkeypatch, tmp_path):
    observers, changed = SINUSOID_KEY_CHECKS[key]
    tmp = tmp_path / "observed"

    def observe_with(observe, updates):
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        cfg = config_lib.validate_config(config_lib.sinusoid_config(**{**SINUSOID_BASE,
                                                                       **updates}))
        with monkeypatch.context() as mp:
            return observe(cfg, mp, tmp)

    for observe in observers:
        assert observe_with(observe, {}) != observe_with(observe, changed), (
            f"changing {key} to {changed[key]!r} changed nothing {observe.__name__} sees in a "
            "sinusoid run")
