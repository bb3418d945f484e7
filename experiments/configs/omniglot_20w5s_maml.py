"""MAML on Omniglot 20-way 5-shot (Finn et al., 2017 settings).

Fixed inner learning rate alpha = 0.1, 5 inner step(s) at train time and 5 at test,
meta-batch 16, final-step loss, shared batch norm, Adam 1e-3 with no annealing for
60,000 iterations (120 epochs of 500), K query images per class (as Finn et al.'s code),
the 'maml' class split (first 1200 classes for training, of which the last 100 are used
for validation; the last 423 for test), rotation augmentation on the training tasks.

Run:
    python -m experiments.train --config=experiments/configs/omniglot_20w5s_maml.py \\
        --workdir runs/omniglot_20w5s_maml --data-dir ../shared/data/omniglot
    python -m experiments.evaluate --workdir runs/omniglot_20w5s_maml \\
        --data-dir ../shared/data/omniglot

CPU smoke variant (``:smoke``: 16 filters, 3 epochs of 100 iterations, 100 validation
tasks, the full 600 test tasks; minutes on a 2-core CPU, far from converged):
    python -m experiments.train --config=experiments/configs/omniglot_20w5s_maml.py:smoke \\
        --workdir runs/smoke/omniglot_20w5s_maml_smoke --data-dir ../shared/data/omniglot

Expected runtime: not measured on a GPU yet (no GPU was lent to the session that wrote
this); 60,000 iterations of a 1-5-step MAML step: minutes to an hour on an H100-class GPU at
the project's speed targets, days on a 2-core CPU.
Paper (MAML test accuracy): 98.9 +- 0.2 %.
"""

from experiments.config_lib import OMNIGLOT_SMOKE, maml_config, select_variant

VARIANTS = {"smoke": OMNIGLOT_SMOKE}


def get_config(arg=None):
    """The paper's config, or the variant ``arg`` (``--config=...py:smoke``)."""
    return select_variant(maml_config(20, 5, paper_test_accuracy=(98.9, 0.2)), arg, VARIANTS)
