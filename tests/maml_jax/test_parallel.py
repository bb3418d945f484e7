"""Scale-out (maml_jax.parallel): sharded steps and evaluation, populations of seeds, the
mesh and memory checks.

Several devices need ``--xla_force_host_platform_device_count`` before JAX starts, so the
multi-device checks run in a subprocess (``parallel_worker.py``, beside this file); this
process keeps one device. The multi-process runs of ``experiments.train``:
``tests/experiments/test_train_distributed.py``.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import types

import pytest

from maml_jax import parallel
from tests.support.repo import ROOT, subprocess_env

WORKER = pathlib.Path(__file__).resolve().parent / "parallel_worker.py"


def _run_worker() -> dict:
    out = subprocess.run([sys.executable, str(WORKER)], env=subprocess_env(4),
                         capture_output=True, text=True, timeout=600, cwd=ROOT, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_sharded_steps_and_populations_match_single_device():
    # One subprocess with 4 fake devices for all the checks (its compiles dominate).
    worker = _run_worker()
    assert worker["devices"] == 4
    # Meta-batch 8 over 4 devices, 3 meta-steps of clipped SGD: the same meta-parameters,
    # optimiser state and rates as on one device (float32 summation order differs only).
    for name in ("MAML/vmap", "MAML++/vmap", "MAML++/map"):
        assert worker[f"{name}/moved"] > 1e-3, name          # training changed the state
        assert worker[f"{name}/diff"] <= 1e-6 * max(1.0, worker[f"{name}/scale"]), name
        assert worker[f"{name}/state_spec"] == "P()", name  # the state stays replicated
    # Partitioned, not replicated: each device does about a quarter of the FLOPs, and the
    # meta-gradient is combined by an all-reduce; no recompile on the second call.
    assert worker["flops_sharded_per_device"] < 0.3 * worker["flops_single"]
    assert worker["hlo_all_reduce"]
    assert not worker["recompiled_on_second_call"]
    # Evaluation split over devices: 13 tasks over 4 devices (padded), steps 0..3.
    assert worker["eval_shape"] == [13, 4]
    assert worker["eval_diff"] < 1e-5
    # A population of 2 seeds, one per device, against two separate single-seed runs.
    assert worker["population_spec"] == "P('seeds',)"
    assert worker["population_loss_shape"] == [2, 3]   # seeds x steps
    for s in (0, 1):
        assert worker[f"population_seed{s}_diff"] <= 1e-6 * max(
            1.0, worker[f"population_seed{s}_scale"])
    assert worker["population_nomesh_diff"] <= 1e-6


def test_meta_batch_must_split_over_devices():
    mesh = types.SimpleNamespace(shape={"tasks": 4, "seeds": 1})
    parallel.check_meta_batch(8, mesh)
    parallel.check_meta_batch(3, None)
    with pytest.raises(ValueError, match=r"meta-batch of 6 tasks .* 4 devices"):
        parallel.check_meta_batch(6, mesh)
    with pytest.raises(ValueError, match="cannot split 1 devices into 2 seed shards"):
        parallel.make_mesh(num_seed_shards=2)


def test_population_memory_check_names_the_estimate():
    gib = 2 ** 30
    mesh = types.SimpleNamespace(shape={"tasks": 1, "seeds": 2})
    parallel.check_population_memory(None, 64, mesh)                 # unknown (CPU): no check
    parallel.check_population_memory(3 * gib, 4, mesh, shared_bytes=gib, limit=10 * gib)
    with pytest.raises(ValueError, match=r"8 seeds needs about 9.00 GiB per device .* "
                                         r"at most 6 seeds"):
        parallel.check_population_memory(3 * gib, 8, mesh, shared_bytes=gib, limit=8 * gib)
