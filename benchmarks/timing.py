"""How the benchmarks time JAX: compile time apart from steady-state calls.

Every timing waits for its results (``jax.block_until_ready``: JAX dispatches
asynchronously, so a call returns before the device is done), compilation is timed on its
own (``compile_timed``: ``lower().compile()``, tracing included) and never mixed into the
steady-state times, the first call after compiling is a warm-up that is not timed
(``time_steps``), and several candidates are timed in turns (``rounds``), so that a change in
the machine's load hits all of them alike.

Example:
    >>> import jax, jax.numpy as jnp
    >>> step = jax.jit(lambda state, x: (state + x, {"loss": jnp.sum(x)}))
    >>> compiled, compile_s = compile_timed(step, jnp.zeros(3), jnp.ones(3))
    >>> state, warm_up, times = time_steps(compiled, jnp.zeros(3), jnp.ones(3), repeats=4)
    >>> state.tolist(), float(warm_up["loss"]), len(times)
    ([5.0, 5.0, 5.0], 3.0, 4)
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax

__all__ = ["timed", "compile_timed", "time_steps", "rounds", "cpu_name", "run_header"]


def cpu_name() -> str:
    """The CPU's model name and core count (Linux), for the machine line of a result."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip() + f" ({os.cpu_count()} cores)"
    except OSError:
        pass
    return platform.processor() or "cpu"


def run_header() -> dict[str, Any]:
    """What a benchmark's result file opens with: the date (UTC), the command line, the
    host, the CPU and the jax version."""
    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "argv": sys.argv, "host": platform.node(), "processor": cpu_name(),
            "cpu_count": os.cpu_count(), "jax": jax.__version__}


def write_report(report: dict[str, Any], path: str | None) -> None:
    """Writes a benchmark's report (``run_header()`` and its rows) as indented JSON to
    ``path``; nothing when ``path`` is None or empty (no ``--out`` given)."""
    if path:
        with open(path, "w") as f:
            json.dump(report, f, indent=1)


def timed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """``fn(*args, **kwargs)`` and its wall-clock seconds, its results waited for.

    Example:
        >>> import jax.numpy as jnp
        >>> out, seconds = timed(jnp.add, 1.0, 2.0)
        >>> float(out), seconds >= 0
        (3.0, True)
    """
    start = time.perf_counter()
    out = jax.block_until_ready(fn(*args, **kwargs))
    return out, time.perf_counter() - start


def compile_timed(jitted: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """``jitted.lower(*args, **kwargs).compile()`` and its seconds (tracing included).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> compiled, seconds = compile_timed(jax.jit(jnp.sin), jnp.zeros(2))
        >>> compiled(jnp.zeros(2)).tolist()
        [0.0, 0.0]
    """
    return timed(lambda: jitted.lower(*args, **kwargs).compile())


def time_steps(step: Callable[..., tuple[Any, Any]], state: Any, *args: Any,
               repeats: int) -> tuple[Any, Any, list[float]]:
    """Steady-state seconds of ``state, out = step(state, *args)``.

    One untimed warm-up call, then ``repeats`` timed ones, each continuing from the state
    the call before returned (a donated state is never reused).

    Returns:
        ``(state after the last call, the warm-up call's out, seconds per timed call)``.
    """
    state, warm_up = jax.block_until_ready(step(state, *args))
    times = []
    for _ in range(repeats):
        (state, _), seconds = timed(step, state, *args)
        times.append(seconds)
    return state, warm_up, times


def rounds(repeats: int, *, max_seconds: float | None = None,
           min_rounds: int = 2) -> Iterator[int]:
    """Round indices ``0..repeats - 1`` for timing several candidates in turns.

    Stops early after a round that ends more than ``max_seconds`` after the first began,
    once ``min_rounds`` rounds are done.

    Example:
        >>> list(rounds(3)), list(rounds(5, max_seconds=0.0))
        ([0, 1, 2], [0, 1])
    """
    start = time.perf_counter()
    for i in range(repeats):
        yield i
        if (max_seconds is not None and i + 1 >= min_rounds
                and time.perf_counter() - start > max_seconds):
            return
