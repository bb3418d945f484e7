"""The paper table's progress between GPU windows: a small copy of each run, committed.

A GPU is lent rarely and for minutes, and a paper-table run (50,000 outer steps and more)
outlasts a window. So after each call the runs of ``experiments.reproduce`` are saved into
one folder of the repository, ``STATE_DIR`` (committed; the project's checks that warn
about committed checkpoints leave ``paper_table/state/`` alone), and the next window's
command restores them and continues exactly where the last one stopped:

* an unfinished run keeps its result files and its **latest checkpoint only**: the whole
  ``MetaState`` (meta-parameters, optimizer state, batch-norm statistics, step, RNG), as
  stored, in ``checkpoint.npz``, with ``checkpoint.json`` (step, epoch, validation metrics,
  every array's shape and dtype, a sha256 of them all);
* a finished run keeps its result files and drops its checkpoint;
* each save replaces the run's previous state.

The result files are ``RESULT_FILES`` (config, training summary, test results, the calls'
log, the metrics log). Restoring writes the checkpoint back as the run's orbax checkpoint
at its step, with its validation metrics, so ``experiments.train`` resumes it bit for bit.
The checkpoints kept before a save other than the latest (the best ``keep_best`` by
validation accuracy) are not carried: a run resumed in a later window picks its best
checkpoint and ensemble among the latest checkpoint of the previous window and those it
writes itself.

Usage (what ``benchmarks/gpu_queue.sh`` does around a call)::

    python -m experiments.table_state restore --root runs/paper_table
    python -m experiments.reproduce ... --root runs/paper_table
    python -m experiments.table_state save --root runs/paper_table

(``experiments.reproduce --state-dir`` does both around every run it trains.)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pathlib
import shutil
import sys
from typing import Any

import numpy as np

from experiments import checkpoints

__all__ = ["STATE_DIR", "RESULT_FILES", "CHECKPOINT_FILE", "CHECKPOINT_INFO", "run_dirs",
           "save_run", "restore_run", "save_table", "restore_table", "state_bytes", "main"]

ROOT = pathlib.Path(__file__).resolve().parents[1]
#: Where the table's state is committed (relative to the repository root).
STATE_DIR = pathlib.Path("experiments/results/paper_table/state")
RESULT_FILES = (checkpoints.CONFIG_FILE, checkpoints.SUMMARY_FILE, "test_results.json",
                "reproduce_calls.json", "metrics.jsonl", "failed.json")
CHECKPOINT_FILE = "checkpoint.npz"
CHECKPOINT_INFO = "checkpoint.json"


def _digest(arrays: list[np.ndarray]) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def run_dirs(root: str | pathlib.Path) -> list[pathlib.Path]:
    """The run directories under ``root`` (those holding a ``config.json``), relative to
    it: ``<run>`` for a population, ``<run>/seed<k>`` for a run trained seed by seed.

    Example:
        >>> run_dirs("no/such/root")
        []
    """
    root = pathlib.Path(root)
    if not root.is_dir():
        return []
    found = [p.parent.relative_to(root) for p in root.glob(f"*/{checkpoints.CONFIG_FILE}")]
    found += [p.parent.relative_to(root) for p in root.glob(f"*/*/{checkpoints.CONFIG_FILE}")]
    return sorted(d for d in found if d.parts[0] != "results")


def _finished(workdir: pathlib.Path) -> bool:
    summary = workdir / checkpoints.SUMMARY_FILE
    return summary.is_file() and bool(json.loads(summary.read_text()).get("finished"))


def _latest_checkpoint(workdir: pathlib.Path) -> tuple[int, list[np.ndarray], dict, dict] | None:
    """``(step, arrays in leaf order, info, metrics)`` of the run's latest checkpoint."""
    if not (workdir / checkpoints.CHECKPOINT_DIR).is_dir():
        return None
    import orbax.checkpoint as ocp
    mngr = checkpoints.checkpoint_manager(workdir, keep_best=1, read_only=True)
    try:
        step = mngr.latest_step()
        if step is None:
            return None
        out = mngr.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()))
        arrays = [np.asarray(out["state"][k]) for k in sorted(out["state"])]
        return int(step), arrays, dict(out["meta"]), dict(mngr.metrics(step) or {})
    finally:
        mngr.close()


def _checkpoint_step(workdir: pathlib.Path) -> int | None:
    if not (workdir / checkpoints.CHECKPOINT_DIR).is_dir():
        return None
    mngr = checkpoints.checkpoint_manager(workdir, keep_best=1, read_only=True)
    try:
        return mngr.latest_step()
    finally:
        mngr.close()


def save_run(workdir: str | pathlib.Path, dest: str | pathlib.Path) -> dict[str, Any]:
    """Replaces ``dest`` with ``workdir``'s result files and, unless the run is finished,
    its latest checkpoint (see the module docstring); returns what was saved.

    Returns:
        ``{"files": [...], "bytes": total size, "checkpoint_step": step or None}``.
    """
    workdir, dest = pathlib.Path(workdir), pathlib.Path(dest)
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in RESULT_FILES:
        if (workdir / name).is_file():
            shutil.copy2(workdir / name, tmp / name)
    latest = None if _finished(workdir) else _latest_checkpoint(workdir)
    if latest is not None:
        step, arrays, info, metrics = latest
        np.savez_compressed(tmp / CHECKPOINT_FILE,
                            **{f"{i:05d}": a for i, a in enumerate(arrays)})
        checkpoints.write_json(tmp / CHECKPOINT_INFO, {
            "step": step, "info": info, "metrics": metrics,
            "leaves": [[list(a.shape), str(a.dtype)] for a in arrays],
            "sha256": _digest(arrays)})
    # Replace, never merge: a finished run's old checkpoint must not linger.
    shutil.rmtree(dest, ignore_errors=True)
    tmp.replace(dest)
    files = sorted(p.name for p in dest.iterdir())
    return {"files": files, "bytes": sum((dest / f).stat().st_size for f in files),
            "checkpoint_step": None if latest is None else latest[0]}


def restore_run(src: str | pathlib.Path, workdir: str | pathlib.Path) -> str:
    """Writes a saved run back into ``workdir`` unless ``workdir`` is as far or further
    (a machine still warm from an earlier call); returns what it did.

    Raises:
        ValueError: the saved checkpoint does not match its ``checkpoint.json`` (a broken
            or partly committed state): never resumed from silently.
    """
    src, workdir = pathlib.Path(src), pathlib.Path(workdir)
    if not (src / checkpoints.CONFIG_FILE).is_file():
        return "nothing saved"
    info = (json.loads((src / CHECKPOINT_INFO).read_text())
            if (src / CHECKPOINT_INFO).is_file() else None)
    saved_step = None if info is None else info["step"]
    here_step = _checkpoint_step(workdir)
    saved_finished = _finished(src)
    # Keep the run here where it is as far or further: finished, at a later (or the same)
    # checkpoint, or checkpointed where the saved copy is neither finished nor checkpointed.
    if _finished(workdir) or (here_step is not None and (
            (saved_step is None and not saved_finished)
            or (saved_step is not None and here_step >= saved_step))):
        return f"kept the run here (step {here_step})"
    if info is not None:
        with np.load(src / CHECKPOINT_FILE) as z:
            arrays = [z[k] for k in sorted(z.files)]
        if ([[list(a.shape), str(a.dtype)] for a in arrays] != info["leaves"]
                or _digest(arrays) != info["sha256"]):
            raise ValueError(f"{src / CHECKPOINT_FILE} does not match {CHECKPOINT_INFO} "
                             "(shapes, dtypes or sha256): the saved state is broken")
    if workdir.exists():
        shutil.rmtree(workdir)   # an older copy of the run: the saved one replaces it
    workdir.mkdir(parents=True)
    for name in RESULT_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, workdir / name)
    if info is None:
        return "restored the results" + (" (finished)" if saved_finished else "")
    cfg = json.loads((src / checkpoints.CONFIG_FILE).read_text())
    mngr = checkpoints.checkpoint_manager(workdir, cfg.get("keep_best", 5))
    try:
        # A list of the arrays in leaf order: save_checkpoint names them as a MetaState's.
        checkpoints.save_checkpoint(mngr, arrays, info["metrics"], info["info"], info["step"])
    finally:
        mngr.close()
    return f"restored at step {info['step']}"


def save_table(root: str | pathlib.Path, state_dir: str | pathlib.Path,
               runs: list[str] | None = None) -> dict[str, dict]:
    """``save_run`` for every run directory under ``root`` (or those of ``runs``, the
    table's run names), into the same relative paths under ``state_dir``."""
    root, state_dir = pathlib.Path(root), pathlib.Path(state_dir)
    out = {}
    for rel in run_dirs(root):
        if runs is None or rel.parts[0] in runs:
            out[rel.as_posix()] = save_run(root / rel, state_dir / rel)
    return out


def restore_table(state_dir: str | pathlib.Path, root: str | pathlib.Path,
                  runs: list[str] | None = None) -> dict[str, str]:
    """``restore_run`` for every saved run (or those of ``runs``) into ``root``."""
    state_dir, root = pathlib.Path(state_dir), pathlib.Path(root)
    return {rel.as_posix(): restore_run(state_dir / rel, root / rel)
            for rel in run_dirs(state_dir) if runs is None or rel.parts[0] in runs}


def state_bytes(state_dir: str | pathlib.Path) -> dict[str, int]:
    """Bytes on disk per saved run (what the repository carries)."""
    state_dir = pathlib.Path(state_dir)
    return {rel.as_posix(): sum(p.stat().st_size for p in (state_dir / rel).iterdir())
            for rel in run_dirs(state_dir)}


def main(argv: list[str] | None = None) -> int:
    """``python -m experiments.table_state save|restore [--root R] [--state-dir S]``."""
    p = argparse.ArgumentParser(prog="python -m experiments.table_state",
                                description=__doc__.split("\n")[0])
    p.add_argument("action", choices=("save", "restore"))
    p.add_argument("--root", default="runs/paper_table", help="experiments.reproduce's root")
    p.add_argument("--state-dir", default=str(ROOT / STATE_DIR),
                   help="the committed state (default: the repository's)")
    args = p.parse_args(argv)
    if args.action == "save":
        for rel, saved in save_table(args.root, args.state_dir).items():
            step = saved["checkpoint_step"]
            print(f"{rel}: saved {saved['bytes'] / 2**20:.2f} MiB "
                  + (f"(checkpoint at step {step})" if step is not None else "(results only)"))
    else:
        for rel, did in restore_table(args.state_dir, args.root).items():
            print(f"{rel}: {did}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
