"""Test-session settings shared by the tests and the doctests (``make test``).

One JAX persistent compilation cache per test session, shared by the xdist workers and by
the subprocesses the tests start (command lines, several processes): many tests compile
the same small programs (a tiny Conv4 step, the sinusoid MLP) in different processes or
around different Python closures, which jit's in-memory cache cannot share. The cache is
empty at the start of every session, so no result depends on an earlier run, and is
deleted at its end. The first process that loads this file (the xdist controller) creates
it and exports it in the environment, before any worker or subprocess starts.
"""

from __future__ import annotations

import os
import shutil
import tempfile

_CACHE_ENV = "JAX_COMPILATION_CACHE_DIR"
_OWNER_ENV = "MAML_JAX_TEST_CACHE_OWNER"

if _CACHE_ENV not in os.environ:
    os.environ[_CACHE_ENV] = tempfile.mkdtemp(prefix="maml_jax_test_xla_cache_")
    os.environ[_OWNER_ENV] = str(os.getpid())
# Cache every compilation, however small or quick (JAX's defaults skip those under 1 s).
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
# A size limit turns on JAX's file lock, so that concurrent workers never read an entry
# another one is still writing.
os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(4 * 2**30))


def pytest_unconfigure(config):
    """Deletes the session's cache in the process that created it."""
    del config
    if os.environ.get(_OWNER_ENV) == str(os.getpid()):
        shutil.rmtree(os.environ[_CACHE_ENV], ignore_errors=True)
