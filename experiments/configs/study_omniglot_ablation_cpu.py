"""The MAML++ ablation (Table 1 rows) at a scale a 2-core CPU runs in an afternoon.

**REDUCED SCALE**, not comparable with the paper's numbers: Omniglot 5-way 1-shot (the
paper's ablation is 20-way), Conv4 with 16 filters (paper: 64), 3,000 meta-iterations (12
epochs of 250; paper: 50,000), 200 validation tasks, one best checkpoint (no ensemble). The
rows are ``study_omniglot_ablation.rows`` with the epoch schedules scaled to 12 epochs (MSL
over 1, DA first order for 6, cosine over 12). Seeds: 2 for MAML and MAML++, 1 for the
others. ``MAML-equal-time`` trains MAML as long as MAML++ trains (``EQUAL_TIME_EPOCHS``).

Run (resumable, one cell at a time):
    python -m experiments.study_grid --grid experiments/configs/study_omniglot_ablation_cpu.py \\
        --root runs/study_omniglot_ablation_cpu --data-dir ../shared/data/omniglot
CPU smoke: add ``--smoke`` (synthetic glyphs, seconds per cell).

Paper: none at this scale (``paper_test_accuracy`` is None for every row); the full-size
numbers are in ``study_omniglot_ablation``. Measured results: docs/results.md.
"""

from experiments.configs import study_omniglot_ablation as ablation
from experiments.study_grid import StudyGrid

CPU_SCALE = dict(num_filters=16, num_epochs=12, iterations_per_epoch=250, msl_epochs=1,
                 num_val_tasks=200, num_test_tasks=600, keep_best=1, ensemble_size=1,
                 eval_batch_size=20, steps_per_call=50)


# MAML at MAML++'s wall-clock. At this scale the MAML++ step costs 1.47x MAML's in epoch 0
# (multi-step loss on) and 1.08x after it (MSL annealed away; median of 20 round-robin
# steps each, benchmarks/cost_maml_vs_mamlpp.py --filters 16 [--epoch 10], 2-core Xeon,
# 2026-11-26): (1.47 + 11 x 1.08) / 12 = 1.11x over the 12 epochs, so MAML gets
# 13 epochs (3,250 iterations). Constant meta learning rate: nothing else changes.
EQUAL_TIME_EPOCHS = 13


def get_config():
    configs = ablation.rows(5, 1, **CPU_SCALE)
    equal = dict(configs["MAML_5w1s"], name="MAML-equal-time_5w1s", num_epochs=EQUAL_TIME_EPOCHS)
    configs[equal["name"]] = equal
    for cfg in configs.values():
        cfg["paper_test_accuracy"] = None  # a reduced run never stands next to a paper number
    return StudyGrid(configs=configs, seeds=(0,), seeds_for={"MAML_5w1s": (0, 1),
                                                            "MAML++_5w1s": (0, 1)},
                     smoke=ablation.SMOKE)
