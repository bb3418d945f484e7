"""``experiments.table_state``: the paper table survives between GPU windows.

A tiny table run (Omniglot 5w1s MAML++ on synthetic glyphs, two seeds, as one population
or one program per seed) is stopped after the first of two epochs in one "call" with
``--state-dir``, the saved state is copied as a commit would carry it into a fresh root (a
new clone has no ``runs/``), and a second call continues it there: its final
meta-parameters equal those of a run that was never stopped, bit for bit. The saved state
holds the latest checkpoint while the run is unfinished and drops it once the run is done.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from experiments import checkpoints, reproduce, table_state
from experiments.configs import paper_table
from tests.experiments.test_reproduce import TINY

TABLE = reproduce.PaperTable(order=paper_table.get_config().order, seeds=2, smoke=TINY)
RUN = "omniglot_5w1s_mamlpp"


def _call(root, **kwargs):
    logs = []
    report = reproduce.run_table(TABLE, root, cells=["omniglot_5w1s"], methods=["mamlpp"],
                                 smoke=True, command="test", log=logs.append, **kwargs)
    return report, logs


def _programs(layout):
    return [RUN] if layout == "population" else [f"{RUN}/seed0", f"{RUN}/seed1"]


def _sha(root, program):
    summary = json.loads((root / program / checkpoints.SUMMARY_FILE).read_text())
    return summary["meta_params_sha256"], summary["finished"]


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["population", "per_seed"])
def test_a_run_stopped_saved_and_restored_elsewhere_ends_bit_identical(tmp_path, layout):
    """Both layouts: two seeds in one program, or one program per seed."""
    _call(tmp_path / "uninterrupted", layout=layout)
    want = [_sha(tmp_path / "uninterrupted", p) for p in _programs(layout)]
    assert all(finished for _, finished in want)

    # Window 1: every program stopped after epoch 1 of 2; saved.
    state = tmp_path / "window1" / "state"
    report, logs = _call(tmp_path / "window1" / "runs", stop_after=1, state_dir=state,
                         layout=layout)
    assert report["rows"][0]["status"] == "partial" and report["rows"][0]["layout"] == layout
    assert sum("checkpoint at step 2" in line for line in logs) == len(want), logs
    for program in _programs(layout):
        saved = sorted(p.name for p in (state / program).iterdir())
        assert saved == ["checkpoint.json", "checkpoint.npz", "config.json", "metrics.jsonl",
                         "reproduce_calls.json", "test_results.json", "train_summary.json"]
        info = json.loads((state / program / "checkpoint.json").read_text())
        assert info["step"] == 2 and info["info"]["epoch"] == 1
    assert all(size < 5 * 2**20 for size in table_state.state_bytes(state).values())

    # Window 2: a fresh clone (no runs/), the committed state copied in; "auto" keeps the
    # layout the run started with.
    committed = tmp_path / "clone" / "state"
    shutil.copytree(state, committed)
    report, logs = _call(tmp_path / "clone" / "runs", state_dir=committed)
    assert sum("restored at step 2" in line for line in logs) == len(want), logs
    row = report["rows"][0]
    assert row["status"] == "finished" and row["layout"] == layout
    assert row["calls"] == 2 * len(want)
    got = [_sha(tmp_path / "clone" / "runs", p) for p in _programs(layout)]
    assert got == want
    # Finished: the result files stay, the checkpoints go; two seeds, pooled.
    for program in _programs(layout):
        assert not (committed / program / "checkpoint.npz").exists()
        assert (committed / program / "test_results.json").is_file()
    assert len(row["best"]["per_seed_pct"]) == 2 and row["best"]["std_pct"] is not None


def test_the_saved_state_of_a_paper_run_fits_in_5_mib():
    """The state a full-size run carries between windows: its MetaState (the npz adds
    names only), for three seeds, every cell of the table (shapes only: nothing runs)."""
    import jax
    import numpy as np

    from experiments import wiring
    for name in paper_table.get_config().order:
        cfg = reproduce.run_config(name, seeds=1, smoke=False, smoke_updates={}, overrides=[])
        shapes = jax.eval_shape(lambda cfg=cfg: wiring.init_state(cfg, wiring.get_setup(cfg)))
        one_seed = sum(np.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(shapes))
        assert 3 * one_seed < 5 * 2**20, (name, one_seed)


def test_a_broken_saved_state_is_refused(tmp_path):
    """A checkpoint that does not match its record (a partial commit, a git-lfs pointer)
    is an error, never a silent restart or a resume from wrong values."""
    src = tmp_path / "state" / RUN
    src.mkdir(parents=True)
    (src / "config.json").write_text(json.dumps({"keep_best": 2}))
    arrays = {"00000": np.zeros(3, np.float32), "00001": np.int32(4)}
    np.savez_compressed(src / "checkpoint.npz", **arrays)
    info = {"step": 4, "info": {"epoch": 2}, "metrics": {"val_accuracy": 0.5},
            "leaves": [[[3], "float32"], [[], "int32"]],
            "sha256": table_state._digest(list(arrays.values()))}
    (src / "checkpoint.json").write_text(json.dumps(info))
    assert table_state.restore_run(src, tmp_path / "runs" / RUN) == "restored at step 4"
    assert table_state.restore_run(src, tmp_path / "runs" / RUN).startswith("kept")
    info["sha256"] = "0" * 64
    (src / "checkpoint.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match=r"does not match checkpoint\.json"):
        table_state.restore_run(src, tmp_path / "other" / RUN)
