"""``experiments.training_loop``: the one host loop of meta-training, on a tiny sinusoid MLP
(chunks, epochs and their phases, the finiteness check, stopping, a misaligned resume)."""

from __future__ import annotations

import pytest

from experiments import wiring
from experiments.config_lib import sinusoid_config, validate_config
from experiments.training_loop import steps_done, train_chunks
from maml_jax import NonFiniteLossError


def _cfg(**updates):
    """3 epochs of 4 steps; MSL in epoch 0 only, first order (DA) in epochs 0 and 1."""
    return validate_config(sinusoid_config(**{
        "sinusoid_hidden": (4,), "meta_batch_size": 2, "num_epochs": 3,
        "iterations_per_epoch": 4, "steps_per_call": 2, "num_inner_steps": 2,
        "lr_granularity": "layer_step", "learn_inner_lrs": True, "msl": True, "msl_epochs": 1,
        "first_order_epochs": 2, **updates}))


def _start(cfg):
    setup = wiring.get_setup(cfg)
    return wiring.init_state(cfg, setup), setup


def test_chunks_follow_the_epochs_and_their_phases():
    checked = []
    state, setup = _start(_cfg())
    chunks = list(train_chunks(state, None, setup, total_steps=12,
                               check_finite=lambda m, step: checked.append(
                                   (step, m["loss"].shape))))
    assert [(c.step, c.epoch, c.num_steps) for c in chunks] == \
        [(2, 0, 2), (4, 0, 2), (6, 1, 2), (8, 1, 2), (10, 2, 2), (12, 2, 2)]
    assert [c.phase for c in chunks] == \
        [(True, True)] * 2 + [(True, False)] * 2 + [(False, False)] * 2
    # every chunk's host metrics were checked, with the step it started at
    assert checked == [(step, (2,)) for step in (0, 2, 4, 6, 8, 10)]
    assert steps_done(chunks[-1].state) == 12
    assert list(train_chunks(chunks[-1].state, None, setup, total_steps=12)) == []


def test_stopping_early_and_a_non_finite_chunk():
    state, setup = _start(_cfg())
    first = next(iter(train_chunks(state, None, setup, total_steps=12)))
    assert steps_done(first.state) == 2

    def refuse(metrics, step):
        if step == 2:
            raise NonFiniteLossError(f"non-finite loss at outer step {step}")

    seen = []
    with pytest.raises(NonFiniteLossError, match="outer step 2"):
        for chunk in train_chunks(first.state, None, setup, total_steps=12,
                                  check_finite=refuse):
            seen.append(chunk.step)
    assert seen == []   # the chunk from step 2 was refused before it was handed out


def test_a_misaligned_resume_finishes_the_epoch_first():
    """A state at step 3 (e.g. resumed with another steps_per_call): the chunk ends at the
    epoch edge, so that the next epoch's phase starts on time; then full chunks."""
    state, one = _start(_cfg(steps_per_call=1))
    *_, last = train_chunks(state, None, one, total_steps=3)
    _, four = _start(_cfg(steps_per_call=4))
    chunks = list(train_chunks(last.state, None, four, total_steps=12))
    assert [(c.step, c.epoch, c.num_steps) for c in chunks] == [(4, 0, 1), (8, 1, 4),
                                                                (12, 2, 4)]
