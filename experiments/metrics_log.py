"""The run's metrics: ``metrics.jsonl``, ``metrics.csv`` and TensorBoard events.

Example:
    >>> import shutil, tempfile
    >>> workdir = pathlib.Path(tempfile.mkdtemp())
    >>> logger = MetricsLogger(workdir, resume_step=None)
    >>> logger.log({"step": 50, "epoch": 0, "kind": "train", "loss": 1.2})
    >>> logger.close()
    >>> (workdir / "metrics.csv").read_text().splitlines()[1].split(",")[1:5]
    ['50', '0', 'train', '1.2']
    >>> shutil.rmtree(workdir)
"""

from __future__ import annotations

import csv
import json
import pathlib
import sys
import time
from typing import Any

from experiments import plots

__all__ = ["CSV_FIELDS", "MetricsLogger"]

CSV_FIELDS = ("time", "step", "epoch", "kind", "loss", "accuracy", "grad_norm", "meta_lr",
              "val_loss", "val_accuracy", "val_accuracy_ci95")


class MetricsLogger:
    """metrics.jsonl + metrics.csv + TensorBoard; on resume drops records after ``step``."""

    def __init__(self, workdir: pathlib.Path, resume_step: int | None):
        self.jsonl = workdir / "metrics.jsonl"
        self.csv = workdir / "metrics.csv"
        if resume_step is None:
            for p in (self.jsonl, self.csv):
                p.unlink(missing_ok=True)
        else:  # a killed run may have logged past its last checkpoint
            kept = [r for r in plots.read_jsonl(self.jsonl) if r.get("step", 0) <= resume_step]
            self.jsonl.write_text("".join(json.dumps(r) + "\n" for r in kept))
            if self.csv.is_file():
                with self.csv.open(newline="") as f:
                    rows = [r for r in csv.DictReader(f)
                            if r.get("step") and int(r["step"]) <= resume_step]
                self._write_csv(rows, "w")
        if not self.csv.is_file():
            self._write_csv([], "w")
        try:
            from tensorboardX import SummaryWriter
        except ImportError:  # e.g. an accelerator image without it: metrics.* still written
            print("warning: tensorboardX is not installed; no TensorBoard events are written "
                  "(metrics.jsonl and metrics.csv are)", file=sys.stderr)
            self.tb = None
        else:
            self.tb = SummaryWriter(str(workdir / "tensorboard"),
                                    purge_step=None if resume_step is None else resume_step + 1)

    def _write_csv(self, rows, mode):
        with self.csv.open(mode, newline="") as f:
            w = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
            if mode == "w":
                w.writeheader()
            w.writerows(rows)

    def log(self, record: dict[str, Any]) -> None:
        record = {"time": round(time.time(), 3), **record}
        with self.jsonl.open("a") as f:
            f.write(json.dumps(record) + "\n")
        self._write_csv([record], "a")
        if self.tb is None:
            return
        prefix = record["kind"]
        for k, v in record.items():
            if k in ("time", "step", "epoch", "kind"):
                continue
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                self.tb.add_scalar(f"{prefix}/{k}", v, record["step"])
            elif isinstance(v, list):
                for i, x in enumerate(v):
                    self.tb.add_scalar(f"{prefix}/{k}_{i}", x, record["step"])

    def close(self):
        if self.tb is not None:
            self.tb.flush()
            self.tb.close()
