"""``benchmarks/timing.py``: compile time apart, an untimed warm-up, results waited for, and
rounds that stop once their time is up."""

from __future__ import annotations

import os
import sys
import time

import jax
import jax.numpy as jnp

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(_ROOT, "benchmarks"))

import timing  # noqa: E402


def test_time_steps_threads_the_state_and_leaves_the_warm_up_untimed():
    calls = []

    def step(state, x):
        calls.append(int(state))
        return state + x, {"loss": state}

    state, warm_up, times = timing.time_steps(step, jnp.int32(0), jnp.int32(1), repeats=3)
    assert calls == [0, 1, 2, 3] and int(state) == 4 and int(warm_up["loss"]) == 0
    assert len(times) == 3 and all(t >= 0 for t in times)


def test_compile_timed_is_the_compiled_program():
    compiled, seconds = timing.compile_timed(jax.jit(lambda x: 2 * x), jnp.ones(3))
    assert compiled(jnp.ones(3)).tolist() == [2.0, 2.0, 2.0] and seconds > 0


def test_timed_waits_for_the_results():
    waited = []

    class Pending:
        def block_until_ready(self):
            waited.append(True)
            return self

    out, seconds = timing.timed(Pending)
    assert waited == [True] and isinstance(out, Pending) and seconds >= 0


def test_rounds_stop_when_the_time_is_up_but_not_before_the_minimum():
    assert list(timing.rounds(4)) == [0, 1, 2, 3]
    assert list(timing.rounds(4, max_seconds=0.0)) == [0, 1]
    assert list(timing.rounds(4, max_seconds=0.0, min_rounds=3)) == [0, 1, 2]
    done = []
    for i in timing.rounds(5, max_seconds=0.05):
        done.append(i)
        time.sleep(0.03)
    assert done == [0, 1]
