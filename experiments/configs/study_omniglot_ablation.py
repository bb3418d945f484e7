"""The MAML++ paper's ablation (Antoniou et al., 2019, Table 1), one config per row.

Rows: MAML; MAML with one MAML++ component added (BNWB + BNRS, LSLR, CA, DA, MSL); MAML++.
Settings: Omniglot 20-way 1-shot and 20-way 5-shot; 2 seeds per row (the paper reports
3; ``seeds`` below).

Run (GPU; resumable, finished cells are skipped):
    python -m experiments.study_grid --grid experiments/configs/study_omniglot_ablation.py \\
        --root runs/study_omniglot_ablation --data-dir ../shared/data/omniglot
    ... --only='MAML++_20w1s_*'      # one row; any shell pattern (repeat --only for more)
One row alone, without the grid runner (the same config, e.g. MAML + LSLR, 20-way 1-shot):
    python -m experiments.train --config=experiments/configs/omniglot_20w1s_mamlpp.py \\
        --config.per_step_bn=False --config.lr_schedule=constant --config.msl=False \\
        --workdir runs/ablation_lslr --data-dir ../shared/data/omniglot
  (``rows()`` below is the source of truth for which keys each row changes.)
CPU smoke (synthetic glyphs, tiny network, seconds per cell): add ``--smoke``.

Expected runtime: not measured on a GPU yet (no GPU was lent to the session that wrote
this): 7 rows x 2 settings x 2 seeds = 28 cells of 50,000 iterations; at the project's GPU
targets (>= 100 meta-steps/s for 20-way 1-shot) under 10 minutes per cell, several hours
in all. On a 2-core CPU a full-size cell takes days. A reduced version (5-way 1-shot, 16
filters, 3,000 iterations) is ``study_omniglot_ablation_cpu.py``, measured in the README's
"MAML++ claims" section.

Base: every row is the MAML++ reference configuration (``mamlpp_config``: Conv4 with 64
filters, 5 inner steps, meta-batch 8, 1 query image per class in training, reference class
split, 100 epochs of 500 iterations) with the components switched off, so that only the
named component differs between a row and "MAML" (as in the paper's ablation, which used
its own MAML implementation, not Finn et al.'s settings). Switched-off components:
per-step BN weights and statistics -> shared; learned per-layer per-step rates -> one
fixed scalar alpha = 0.1; cosine annealing -> constant meta learning rate; MSL -> loss
after the last step only; DA -> second order from the start (the reference's MAML++
default, ``first_order_epochs=0``). The MAML++ row is ``mamlpp_config`` unchanged, i.e. the
reference code's configuration, which trains second order from the start; the "MAML + DA"
row uses the paper's schedule (first order for the first 50 epochs).

Paper numbers (test accuracy %, 20-way 1-shot / 20-way 5-shot): MAML 95.8 +- 0.3 /
98.9 +- 0.2 (as reported by Finn et al. 2017); MAML++ 97.65 +- 0.05 / 99.33 +- 0.03. The
intermediate rows of Table 1 could not be verified in this session (no copy of the paper
was reachable offline): their ``paper_test_accuracy`` is None rather than a number
from memory.
"""

from experiments.config_lib import mamlpp_config
from experiments.study_grid import OmniglotGrid

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
    return OmniglotGrid(configs={**rows(20, 1), **rows(20, 5)}, seeds=(0, 1), smoke=SMOKE)
