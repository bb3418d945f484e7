"""``experiments.train`` over several processes (jax.distributed on localhost, CPU
collectives): its distributed flags and population checks, two processes that train, stop
and resume, and a process count the coordinator does not run.

The sharded programs themselves (several devices in one process):
``tests/maml_jax/test_parallel.py``.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import numpy as np
import pytest

from experiments import flag_parsing, train
from experiments.config_lib import ConfigError, mamlpp_config, validate_config
from tests.support.repo import ROOT, subprocess_env


def test_population_config_and_distributed_flags_are_checked(monkeypatch):
    for var in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ConfigError, match=r"num_seeds \(3\) must be a multiple of seed_shards"):
        validate_config(mamlpp_config(5, 1, num_seeds=3, seed_shards=2))
    def parse(argv):
        full = ["train", *argv]
        fv = train.define_flags(full)
        flag_parsing.parse(fv, full)
        return train.distributed_flags(fv)

    base = ["--config", "x.py"]
    assert train.distributed_settings(parse(base)) is None
    monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
    monkeypatch.setenv("JAX_PROCESS_ID", "1")
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "localhost:1234")
    assert train.distributed_settings(parse(base)) == {
        "coordinator_address": "localhost:1234", "num_processes": 2, "process_id": 1}
    monkeypatch.delenv("JAX_COORDINATOR_ADDRESS")
    with pytest.raises(ConfigError, match="missing"):
        train.distributed_settings(parse([*base, "--num-processes", "2"]))
    with pytest.raises(ConfigError, match=r"--process-id must be in \[0, 2\)"):
        train.distributed_settings(parse([*base, "--coordinator-address", "localhost:1",
                                          "--num-processes", "2", "--process-id", "2"]))


TINY = """
from experiments.config_lib import mamlpp_config
def get_config():
    return mamlpp_config(3, 1, name="tiny_mp", data="synthetic", synthetic_num_classes=20,
        synthetic_counts=(12, 4, 4), image_size=16, num_filters=2, num_inner_steps=1,
        num_inner_steps_eval=1, msl=False, meta_batch_size=2, num_epochs=2,
        iterations_per_epoch=2, steps_per_call=2, num_val_tasks=2, num_test_tasks=2,
        keep_best=1, ensemble_size=1, msl_epochs=1, num_seeds=2,
        first_order=True)  # the processes' plumbing is under test: the cheapest compile
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _train_processes(config, workdir, n, extra=(), env=None):
    port = _free_port()
    cmd = [sys.executable, "-m", "experiments.train", "--config", str(config), "--workdir",
           str(workdir), "--no-progress", *extra]
    procs = [subprocess.Popen([*cmd, "--coordinator-address", f"localhost:{port}",
                               "--num-processes", str(n), "--process-id", str(i)],
                              env=env or subprocess_env(1), cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(n)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_so, se) in zip(procs, outs, strict=True):
        assert p.returncode == 0, se[-3000:]
    return [json.loads(so.strip().splitlines()[-1]) for so, _ in outs]


@pytest.mark.slow
def test_two_processes_train_stop_and_resume(tmp_path):
    # Two processes on localhost (jax.distributed, CPU collectives), one device each, a
    # population of 2 seeds whose tasks are split over the processes: stopped after epoch
    # 1 and resumed (orbax saving and restoring across processes), they end with identical
    # meta-parameters. Each process holds half of every meta-batch, so identical
    # parameters mean the gradients were reduced across the processes; that the sharded
    # program equals the single-device one is test_sharded_steps_and_populations_match_
    # single_device's (4 devices in one process), so no one-process run is repeated here.
    config = tmp_path / "tiny_mp.py"
    config.write_text(TINY)
    # The resumed pair reuses the first pair's executables (persistent compilation cache).
    env = {**subprocess_env(1), "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax_cache"),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
           "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
    first = _train_processes(config, tmp_path / "mp", 2, ["--stop-after", "1"], env)
    assert [r["finished"] for r in first] == [False, False]
    assert [(r["num_processes"], r["num_devices"], r["num_seeds"])
            for r in first] == [(2, 2, 2)] * 2
    resumed = _train_processes(config, tmp_path / "mp", 2, env=env)
    assert [r["finished"] for r in resumed] == [True, True]
    assert resumed[0]["meta_params_sha256"] == resumed[1]["meta_params_sha256"]
    assert resumed[0]["meta_params_sha256"] != first[0]["meta_params_sha256"]  # it trained on
    # Only process 0 wrote the logs: one record per logged step, with both seeds' losses.
    records = [json.loads(line)
               for line in (tmp_path / "mp" / "metrics.jsonl").read_text().splitlines()]
    train_records = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train_records] == [2, 4]
    assert all(len(r["loss_per_seed"]) == 2 for r in train_records)
    assert all(len(r["val_accuracy_per_seed"]) == 2 for r in records if r["kind"] == "val")
    # The population's checkpoint, read back on one device: evaluated per seed.
    from experiments import evaluate
    res = evaluate.run_evaluation(tmp_path / "mp", compare_siblings=False)
    assert [s["seed"] for s in res["seeds"]] == [0, 1]
    accs = res["over_seeds"]["best"]["per_seed_pct"]
    assert res["over_seeds"]["best"]["mean_pct"] == pytest.approx(np.mean(accs))
    # Resuming with another population size is refused before anything runs.
    from experiments import checkpoints
    cfg = checkpoints.read_workdir_config(tmp_path / "mp")
    with pytest.raises(ConfigError, match="num_seeds: 2 -> 3"):
        train.train_and_evaluate({**cfg, "num_seeds": 3}, tmp_path / "mp")


def test_process_count_must_match_the_coordinator():
    # Process 1 says 3 processes, the coordinator (process 0) runs 2: a clear error.
    port = _free_port()
    code = ("import sys; from experiments import train\n"
            "try:\n"
            f"    train.init_distributed({{'coordinator_address': 'localhost:{port}',"
            " 'num_processes': int(sys.argv[1]), 'process_id': int(sys.argv[2])})\n"
            "    print('ok')\n"
            "except train.ConfigError as err:\n"
            "    print('error:', err)\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, n, i], env=subprocess_env(1), cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for n, i in (("2", "0"), ("3", "1"))]
    outs = [p.communicate(timeout=120)[0].strip().splitlines()[-1] for p in procs]
    assert outs[0] == "ok"
    assert outs[1] == (f"error: this process was started with --num-processes 3 but the "
                       f"coordinator at localhost:{port} runs 2 processes")
