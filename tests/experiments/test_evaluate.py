"""``experiments.evaluate`` (and the validation during training): validation and test tasks
come from their own classes, and the ensemble is the mean of its members' final-step logits.

Observed by an end result that a plausible wiring mistake changes: a split whose images are
all one picture (so any model scores exactly chance on it), an ensemble recomputed from its
members' logits.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from experiments import checkpoints, datasets, evaluate, train, wiring
from maml_jax.data import episodes
from tests.support.tiny_runs import records, tiny_config


def _one_picture(images, classes):
    """Every drawing of ``classes`` replaced by one fixed picture: a model sees identical
    query images in every class of such a task, so its accuracy is exactly 1/ways."""
    out = images.copy()
    out[classes] = images[classes[0], 0]
    return out


@pytest.mark.slow
def test_validation_and_test_tasks_come_from_their_own_classes(tmp_path, monkeypatch):
    # 8 filters and 20 steps: enough for the model to beat chance, so that a split whose
    # pictures are all one is told apart from a real one. No derivative-order annealing:
    # one training program to compile (the splits are under test, not the schedule).
    cfg = tiny_config(num_epochs=4, iterations_per_epoch=5, steps_per_call=5, num_filters=8,
                      keep_best=3, ensemble_size=3, num_val_tasks=6, num_test_tasks=12,
                      first_order_epochs=0)
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
    val = records(work, "val")
    assert len(val) == 4
    for r in val:  # drawn from the validation classes, not from the training ones
        assert r["val_accuracy"] == pytest.approx(0.2, abs=1e-6)
        assert r["val_accuracy_per_step"] == pytest.approx([0.2] * 3, abs=1e-6)
    assert max(r["accuracy"] for r in records(work, "train")) > 0.4  # training is not
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
