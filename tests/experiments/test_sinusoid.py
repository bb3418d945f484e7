"""``experiments.sinusoid``, the `make demo` script (smoke config)."""

import json

import numpy as np
import pytest

from experiments import sinusoid


def test_demo_script_smoke(tmp_path):
    result = sinusoid.main(["--config", "experiments/configs/sinusoid_paper.py:smoke",
                            "--workdir", str(tmp_path), "--no-progress"])
    for name in ("results.json", "results.md", "trajectory.png", "final_loss_spread.png",
                 "learned_inner_lrs.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    saved = json.loads((tmp_path / "results.json").read_text())
    assert set(saved["test_mse"]) == {"MAML", "MAML++"}
    md = (tmp_path / "results.md").read_text()
    for name, method in saved["test_mse"].items():
        assert set(method) == {"5", "10"}
        for k, per_k in method.items():
            assert set(per_k) == {"0", "1", "3"}
            for mean, ci in per_k.values():
                assert np.isfinite(mean) and ci > 0
            # The published table is the measured one, cell for cell, in step order.
            cells = " | ".join(f"{per_k[s][0]:.3f} ± {per_k[s][1]:.3f}" for s in ("0", "1", "3"))
            assert f"| {name} | {k} | {cells} |" in md, (name, k)
        # Every method trained for the configured iterations, in call-sized chunks.
        log = result["train_log"][name]
        assert [r["iteration"] for r in log] == [20, 40]
        assert all(np.isfinite(r["loss"]) for r in log)
    assert "| method | K | 0 steps | 1 step | 3 steps |" in md
    assert result["train_seconds"]["MAML"] > 0


def test_demo_script_rejects_bad_arguments(tmp_path):
    with pytest.raises(SystemExit, match="config file not found"):
        sinusoid.main(["--config", str(tmp_path / "nope.py")])
    with pytest.raises(SystemExit, match="--iterations must be >= 1"):
        sinusoid.main(["--config", "experiments/configs/sinusoid_paper.py:smoke",
                       "--iterations", "0"])
