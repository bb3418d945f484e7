"""The host loop of meta-training: one compiled call per chunk of outer steps.

``train_chunks`` is the loop every trainer of the experiments runs (``experiments.train``
on images, ``experiments.sinusoid`` on sinusoids). Each chunk is one call of
``maml_jax.jit_train_steps`` for ``setup.steps_per_call`` outer steps, a divisor of the
epoch, so that the derivative order and the multi-step loss (``maml_jax.phase`` of the
chunk's epoch) change on chunk edges only. The chunk's metrics come to the host and are
checked for non-finite values before the chunk is handed out; what happens between chunks
(logs, validation, checkpoints, stopping early) is the caller's.

Example:
    >>> from experiments.config_lib import sinusoid_config, validate_config
    >>> from experiments import wiring
    >>> cfg = validate_config(sinusoid_config(sinusoid_hidden=(8,), meta_batch_size=2,
    ...                                       num_epochs=2, iterations_per_epoch=4,
    ...                                       steps_per_call=2))
    >>> setup = wiring.get_setup(cfg)
    >>> state = wiring.init_state(cfg, setup)
    >>> [(c.step, c.epoch, c.metrics["loss"].shape)
    ...  for c in train_chunks(state, None, setup, total_steps=8)]
    [(2, 0, (2,)), (4, 0, (2,)), (6, 1, (2,)), (8, 1, (2,))]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable, Iterator
from typing import Any

import jax
import numpy as np

from experiments.wiring import Setup
from maml_jax import meta, parallel

__all__ = ["Chunk", "steps_done", "train_chunks"]


@dataclasses.dataclass(frozen=True)
class Chunk:
    """One host call of meta-training, as ``train_chunks`` hands it out."""

    state: meta.MetaState         # after the chunk (the state before it was donated)
    metrics: dict[str, np.ndarray]  # the chunk's per-step metrics, on the host
    step: int                     # outer steps done after the chunk
    epoch: int                    # the epoch the chunk trained in
    num_steps: int                # outer steps in the chunk
    phase: Hashable               # the algorithm's phase of its epoch (maml_jax.phase)


def steps_done(state: meta.MetaState) -> int:
    """The outer steps a (population) state has taken, as a Python int.

    Example:
        >>> import jax.numpy as jnp
        >>> steps_done(meta.MetaState(jnp.array([6, 6]), None, None, None, None))
        6
    """
    return int(parallel.host_array(state.step).reshape(-1)[0])


def train_chunks(state: meta.MetaState, data: Any, setup: Setup, *, total_steps: int,
                 mesh: Any = None, population: bool = False,
                 check_finite: Callable[[dict, int], None] = meta.check_finite,
                 ) -> Iterator[Chunk]:
    """Meta-trains ``state`` from its step to ``total_steps``, one ``Chunk`` per host call.

    Args:
        state: The state to continue from (donated to the first call: use the chunks'
            states from then on).
        data: What ``setup.sample_fn`` samples tasks from (the training images on the
            device; None for sinusoids).
        setup: The config's ``wiring.Setup`` (sampler, loss, optimizer, ``MetaConfig``,
            steps per call).
        total_steps: Where training ends (``num_epochs * iterations_per_epoch``).
        mesh: ``wiring.make_mesh``'s mesh, or None for the default device.
        population: The state holds a population of seeds (``wiring.init_population``).
        check_finite: Called as ``check_finite(metrics, step)`` with each chunk's host
            metrics and the step it started at; raises ``maml_jax.NonFiniteLossError`` to
            stop training (the default: ``maml_jax.check_finite``).

    Yields:
        A ``Chunk`` per call; breaking out of the loop stops training after it.
    """
    ipe = setup.meta_config.iterations_per_epoch
    step = steps_done(state)
    while step < total_steps:
        epoch = step // ipe
        # Never past the end nor across an epoch edge (the phase is the epoch's); a full
        # call everywhere but after a resume with another steps_per_call.
        n = min(setup.steps_per_call, total_steps - step, ipe - step % ipe)
        phase = meta.phase(setup.meta_config, epoch)
        state, metrics = parallel.jit_train_steps(
            state, data, mesh=mesh, population=population, sample_tasks=setup.sample_fn,
            num_steps=n, loss_fn=setup.train_loss_fn, optimizer=setup.optimizer,
            config=setup.meta_config, phase=phase)
        metrics = jax.tree.map(parallel.host_array, metrics)
        check_finite(metrics, step)
        step += n
        yield Chunk(state, metrics, step, epoch, n, phase)
