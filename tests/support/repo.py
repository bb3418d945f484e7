"""Paths of the repository, and the environment of the tests' subprocesses."""

from __future__ import annotations

import os
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]
CONFIG_DIR = ROOT / "experiments" / "configs"


def subprocess_env(devices: int) -> dict:
    env = dict(os.environ)
    # LLVM optimisation off: these subprocesses compare programs with each other under the
    # same flags (sharded vs one device, process vs process), and compile time dominates.
    env["XLA_FLAGS"] = (f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count="
                        f"{devices} --xla_backend_optimization_level=0")
    env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}"
    return env
