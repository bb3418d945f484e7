"""The study grids (``experiments/study_grid.py`` and its grid configs): the sinusoid grid's
cells and smoke variant, the Omniglot ablation rows, the CPU ablation grid, and a grid file
of the wrong kind. (A grid trained and studied end to end: ``test_study.py``.)"""

from __future__ import annotations

import pytest

from experiments import study_grid
from experiments.configs import study_learned_rates, study_sinusoid


def test_study_config_grid_and_smoke_variant():
    grid = study_sinusoid.get_config()
    full = study_grid.cells(grid)
    assert len(full) == 7 * 2 * 3
    assert {c["num_inner_steps"] for _, c in full} == {1, 5}
    assert all(c["num_epochs"] * c["iterations_per_epoch"] == 70_000 for _, c in full)
    smoke = study_grid.cells(grid, smoke=True)
    assert [n for n, _ in smoke] == [n for n, _ in full]
    assert all(c["num_epochs"] * c["iterations_per_epoch"] == 40 for _, c in smoke)
    # The smoke variant changes the budget and the MSL schedule, nothing else.
    budget = dict(num_epochs=70, iterations_per_epoch=1000, meta_batch_size=25,
                  steps_per_call=500, msl_epochs=full[0][1]["msl_epochs"])
    assert {**smoke[0][1], **budget} == full[0][1]
    # Cells are named <method>_K<k>_s<seed>; the study groups them by the config's name.
    name, cfg = full[0]
    assert name == "MAML-1step_K5_s0" and cfg["name"] == "MAML-1step"
    assert (cfg["k_shot"], cfg["q_query"], cfg["sinusoid_eval_shots"]) == (5, 5, (5,))
    assert [c["k_shot"] for n, c in full if n.startswith("MAML++_K10")] == [10, 10, 10]


def test_the_claims_grid_keeps_its_recorded_recipes():
    """The settings the recorded results were trained with (experiments/results/)."""
    sinusoid_cells = dict(study_grid.cells(study_sinusoid.get_config()))
    for method in ("MAML+LSLR", "MAML++", "Meta-SGD", "MAML++-param"):
        cfg = sinusoid_cells[f"{method}_K5_s0"]
        assert (cfg["rate_update"], cfg["inner_grad_clip"], cfg["inner_lr"]) == \
            ("reference_0.1x", None, 0.01)
        assert cfg["lr_schedule"] == "constant" and cfg["task_batching"] == "vmap"
    rates = dict(study_grid.cells(study_learned_rates.get_config()))
    assert (rates["Meta-SGD_K5_s0"]["rate_update"], rates["Meta-SGD_K5_s0"]["inner_grad_clip"]) \
        == ("log_10x", 100.0)
    assert rates["MAML++_K10_s2"]["rate_update"] == "reference_0.1x"
    assert rates["ANIL_K5_s1"]["inner_loop"] == "head"
    assert all(c["num_epochs"] * c["iterations_per_epoch"] == 20_000 for c in rates.values())


def test_unknown_grid_is_a_clear_error(tmp_path, capsys):
    path = tmp_path / "g.py"
    path.write_text("def get_config():\n    return {'a': 1}\n")
    assert study_grid.main(["--grid", str(path), "--root", str(tmp_path / "r")]) == 2
    assert "StudyGrid" in capsys.readouterr().err


def test_a_bad_cell_names_itself():
    from experiments.config_lib import ConfigError, sinusoid_config
    grid = study_grid.StudyGrid(configs={"a": sinusoid_config(num_inner_steps_eval=2)})
    with pytest.raises(ConfigError, match="cell a_s0: sinusoid_eval_steps"):
        study_grid.cells(grid)


def test_omniglot_ablation_rows_differ_from_maml_only_in_their_component():
    from experiments.config_lib import mamlpp_config, validate_config
    from experiments.configs import study_omniglot_ablation as ablation

    grid = ablation.get_config()
    full = dict(study_grid.cells(grid))
    assert len(full) == 7 * 2 * 2
    want = {
        "MAML+BN": {"per_step_bn"},
        "MAML+LSLR": {"lr_granularity", "learn_inner_lrs"},
        "MAML+CA": {"lr_schedule"},
        "MAML+DA": {"first_order_epochs"},
        "MAML+MSL": {"msl"},
    }
    for setting in ("20w1s", "20w5s"):
        maml = full[f"MAML_{setting}_s0"]
        assert not maml["msl"] and not maml["learn_inner_lrs"] and not maml["per_step_bn"]
        assert maml["lr_schedule"] == "constant" and maml["first_order_epochs"] == 0
        for row, keys in want.items():
            cfg = full[f"{row}_{setting}_s0"]
            changed = {k for k in cfg if cfg[k] != maml[k]} - {"name", "paper_test_accuracy"}
            assert changed == keys, (row, changed)
        ways, shots = int(setting[:2]), int(setting[3])
        plus = full[f"MAML++_{setting}_s1"]
        # grid cells are validated configs ("auto" settings resolved), as train reads them
        assert {k: v for k, v in plus.items() if k not in ("name", "paper_test_accuracy", "seed")} \
            == {k: v for k, v in validate_config(mamlpp_config(ways, shots)).items()
                if k not in ("name", "paper_test_accuracy", "seed")}
        assert plus["seed"] == 1
    assert full["MAML_20w1s_s0"]["paper_test_accuracy"] == (95.8, 0.3)
    assert full["MAML++_20w5s_s0"]["paper_test_accuracy"] == (99.33, 0.03)
    assert full["MAML+LSLR_20w1s_s0"]["paper_test_accuracy"] is None   # not verified
    smoke = study_grid.cells(grid, smoke=True)
    assert all(c["data"] == "synthetic" and c["num_filters"] == 4 for _, c in smoke)
    assert full["MAML+DA_20w1s_s0"]["first_order_epochs"] == 50


def test_cpu_ablation_grid_scales_the_schedules_and_seeds():
    from experiments.config_lib import ConfigError
    from experiments.configs import study_omniglot_ablation_cpu

    grid = study_omniglot_ablation_cpu.get_config()
    cells = dict(study_grid.cells(grid))
    assert sorted(cells) == sorted(
        ["MAML_5w1s_s0", "MAML_5w1s_s1", "MAML++_5w1s_s0", "MAML++_5w1s_s1"]
        + [f"MAML+{r}_5w1s_s0" for r in ("BN", "LSLR", "CA", "DA", "MSL")]
        + ["MAML-equal-time_5w1s_s0"])
    assert cells.pop("MAML-equal-time_5w1s_s0")["num_epochs"] == 13
    assert all(c["num_filters"] == 16 and c["num_epochs"] == 12 and c["msl_epochs"] == 1
               and c["paper_test_accuracy"] is None for c in cells.values())
    assert cells["MAML+DA_5w1s_s0"]["first_order_epochs"] == 6       # half, as 50 of 100
    assert cells["MAML_5w1s_s1"]["seed"] == 1
    with pytest.raises(ConfigError, match="seeds_for names unknown configs"):
        study_grid.cells(study_grid.StudyGrid(configs={}, seeds_for={"x": (0,)}))
