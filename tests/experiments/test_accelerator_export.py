"""The GPU's and TPU's programs lower here, on the CPU: a lowering that only fails on an
accelerator is caught before device time is spent on it.

``jax.export`` lowers for the ``cuda`` and ``tpu`` platforms without either present. What
is exported is what a paper-table run on an accelerator compiles, at the real size (Conv4,
64 filters, Omniglot 5-way 1-shot, meta-batch 8, 5 inner steps, second order with MSL):
the jitted outer step, ``train_steps`` (several outer steps per call, tasks drawn on the
device), the population's step (3 seeds) and the evaluation, for each ``conv_impl``, with
the settings "auto" resolves to on an accelerator (tasks under ``vmap``, the inner scan not
unrolled) rather than the CPU's. Only shapes go in: nothing is computed.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import pytest
from jax import export

from experiments import reproduce, wiring
from maml_jax import meta, models, parallel

PLATFORMS = ("cuda", "tpu")
TRAIN_CLASSES = 1100   # about Omniglot's training split: only the shape matters


def _setup(conv_impl: str):
    cfg = reproduce.run_config("omniglot_5w1s_mamlpp", seeds=1, smoke=False, smoke_updates={},
                               overrides=[f"conv_impl={conv_impl}", "task_batching=vmap"])
    setup = wiring.get_setup(cfg)
    state = jax.eval_shape(lambda: wiring.init_state(cfg, setup))
    images = jax.ShapeDtypeStruct((TRAIN_CLASSES, 20, 28, 28), jnp.float32)
    return cfg, setup, state, images


def _export(fn, *args):
    exported = export.export(jax.jit(fn), platforms=PLATFORMS)(*args)
    assert exported.platforms == PLATFORMS
    return exported


def _static(setup):
    # unroll="auto" is 1 on accelerators (5 on the CPU this test runs on).
    config = dataclasses.replace(setup.meta_config, unroll=1)
    return dict(loss_fn=setup.train_loss_fn, optimizer=setup.optimizer, config=config,
                phase=(False, True))


@pytest.mark.parametrize("conv_impl", models.CONV_IMPLS)
def test_training_programs_lower_for_gpu_and_tpu(conv_impl):
    _, setup, state, images = _setup(conv_impl)
    tasks = jax.eval_shape(setup.sample_fn, jax.random.PRNGKey(0), images)
    assert tasks[0][0].shape == (8, 5, 28, 28, 1)   # the real meta-batch

    _export(functools.partial(meta.outer_step, **_static(setup)), state, tasks)
    train = functools.partial(meta.train_steps, sample_tasks=setup.sample_fn, num_steps=10,
                              **_static(setup))
    _export(train, state, images)
    population = jax.tree.map(lambda a: jax.ShapeDtypeStruct((3, *a.shape), a.dtype), state)
    _export(functools.partial(parallel.population_train_steps, sample_tasks=setup.sample_fn,
                              num_steps=10, **_static(setup)), population, images)


@pytest.mark.parametrize("conv_impl", models.CONV_IMPLS)
def test_evaluation_lowers_for_gpu_and_tpu(conv_impl):
    cfg, setup, state, _ = _setup(conv_impl)
    n = cfg["num_inner_steps_eval"]
    shape = lambda *s, dtype=jnp.float32: jax.ShapeDtypeStruct(s, dtype)
    tasks = ((shape(600, 5, 28, 28, 1), shape(600, 5, dtype=jnp.int32)),
             (shape(600, 5, 28, 28, 1), shape(600, 5, dtype=jnp.int32)))
    mp = state.meta_params
    _export(functools.partial(meta.evaluate_tasks, setup.eval_loss_fn, num_steps=n,
                              batch_size=wiring.eval_batch_size(cfg),
                              inner_grad_clip=setup.meta_config.inner_grad_clip),
            mp["params"], mp["inner_lrs"], tasks)
    _export(setup.final_logits, mp["params"], mp["inner_lrs"], tasks[0], tasks[1][0])
