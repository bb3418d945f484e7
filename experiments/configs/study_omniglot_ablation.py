"""The MAML++ paper's ablation (Antoniou et al., 2019, Table 1), one config per row.

Rows: MAML; MAML with one MAML++ component added (BNWB + BNRS, LSLR, CA, DA, MSL); MAML++.
Settings: Omniglot 20-way 1-shot and 5-shot at full size; 2 seeds per row (``seeds``). Every
row is ``mamlpp_config`` with the other components switched off (``MAML_OFF``), so a row
differs from "MAML" in its component only, as in the paper's own ablation; ``rows()`` is the
source of truth for what each row changes (DA: first order for the first half of the epochs).

Run (GPU; resumable, finished cells are skipped):
    python -m experiments.study_grid --grid experiments/configs/study_omniglot_ablation.py \\
        --root runs/study_omniglot_ablation --data-dir ../shared/data/omniglot
    ... --only='MAML++_20w1s_*'      # one row; any shell pattern (repeat --only for more)
CPU smoke (synthetic glyphs, tiny network, seconds per cell): add ``--smoke``. A reduced
CPU-scale version is ``study_omniglot_ablation_cpu.py``.

Paper (test accuracy %, 20w1s / 20w5s): MAML 95.8 +- 0.3 / 98.9 +- 0.2 (Finn et al.);
MAML++ 97.65 +- 0.05 / 99.33 +- 0.03. The intermediate rows could not be verified against
the paper offline: their ``paper_test_accuracy`` is None rather than a number from memory.
"""

from experiments.config_lib import mamlpp_config
from experiments.study_grid import StudyGrid

PAPER = {  # (ways, shots) -> row -> (mean, ci95) in percent, None where not verified
    (20, 1): {"MAML": (95.8, 0.3), "MAML++": (97.65, 0.05)},
    (20, 5): {"MAML": (98.9, 0.2), "MAML++": (99.33, 0.03)},
}

# MAML: every MAML++ component off (see the module docstring).
MAML_OFF = dict(per_step_bn=False, lr_granularity="scalar", learn_inner_lrs=False,
                lr_schedule="constant", msl=False, first_order_epochs=0)
# The paper's DA: first order for the first 50 of 100 epochs, then second order (our
# first_order_epochs counts the first-order epochs; see config_lib). Scaled with
# num_epochs by rows().
DA_EPOCHS = 50

ROWS = {
    "MAML": {},
    "MAML+BN": dict(per_step_bn=True),                                  # BNWB + BNRS
    "MAML+LSLR": dict(lr_granularity="layer_step", learn_inner_lrs=True),
    "MAML+CA": dict(lr_schedule="cosine"),
    "MAML+DA": dict(first_order_epochs=DA_EPOCHS),
    "MAML+MSL": dict(msl=True),
    "MAML++": None,   # the repository's MAML++ config as it is (mamlpp_config)
}

SMOKE = dict(data="synthetic", num_ways=5, synthetic_num_classes=30, synthetic_counts=(20, 5, 5),
             num_filters=4, num_inner_steps=2, num_inner_steps_eval=2, meta_batch_size=2,
             num_epochs=2, iterations_per_epoch=2, steps_per_call=2, num_val_tasks=4,
             num_test_tasks=4, keep_best=1, ensemble_size=1, msl_epochs=1)


def rows(ways: int, shots: int, **scale) -> dict[str, dict]:
    """``{name: config}`` for one setting; name = row + setting, e.g. ``MAML+LSLR_20w1s``.

    ``scale``: config updates applied to every row (a reduced-scale version of the table).
    The DA row's first-order phase stays half of ``num_epochs``, as in the paper.
    """
    out = {}
    for row, on in ROWS.items():
        cfg = mamlpp_config(ways, shots, **{**({} if on is None else {**MAML_OFF, **on}), **scale})
        if row == "MAML+DA":
            cfg["first_order_epochs"] = cfg["num_epochs"] * DA_EPOCHS // 100
        cfg["name"] = f"{row}_{ways}w{shots}s"
        cfg["paper_test_accuracy"] = PAPER.get((ways, shots), {}).get(row)
        out[cfg["name"]] = cfg
    return out


def get_config():
    return StudyGrid(configs={**rows(20, 1), **rows(20, 5)}, seeds=(0, 1), smoke=SMOKE)
