"""MAML on Omniglot 5-way 1-shot (Finn et al., 2017 settings).

Fixed inner learning rate alpha = 0.4, 1 inner step(s) at train time and 3 at test,
meta-batch 32, final-step loss, shared batch norm, Adam 1e-3 with no annealing for
60,000 iterations (120 epochs of 500), K query images per class (as Finn et al.'s code),
the 'maml' class split (first 1200 classes for training, of which the last 100 are used
for validation; the last 423 for test), rotation augmentation on the training tasks.

Run:
    python -m experiments.train --config=experiments/configs/omniglot_5w1s_maml.py \\
        --workdir runs/omniglot_5w1s_maml --data-dir ../shared/data/omniglot
    python -m experiments.evaluate --workdir runs/omniglot_5w1s_maml \\
        --data-dir ../shared/data/omniglot

CPU smoke variant (``:smoke``: 16 filters, 3 epochs of 100 iterations, 100 validation
tasks, the full 600 test tasks; far from converged by design):
    python -m experiments.train --config=experiments/configs/omniglot_5w1s_maml.py:smoke \\
        --workdir runs/smoke/omniglot_5w1s_maml_smoke --data-dir ../shared/data/omniglot
    python -m experiments.evaluate --workdir runs/smoke/omniglot_5w1s_maml_smoke \\
        --data-dir ../shared/data/omniglot
  about 1.5 minutes train + 30 s evaluate on an idle 2-core CPU (measured 2026-11-26 on an
  Intel Xeon, whole commands: 74 s + 29 s); test accuracy (600 tasks, best checkpoint)
  73.3 +- 1.6 %, top-3 ensemble 69.1 +- 1.6 %.

Expected runtime: not measured on a GPU yet (no GPU was lent to the session that wrote
this); 60,000 iterations of a 1-5-step MAML step: minutes to an hour on an H100-class GPU at
the project's speed targets, days on a 2-core CPU.
Paper (MAML test accuracy): 98.7 +- 0.4 %.
"""

from experiments.config_lib import OMNIGLOT_SMOKE, maml_config, select_variant

VARIANTS = {"smoke": OMNIGLOT_SMOKE}


def get_config(arg=None):
    """The paper's config, or the variant ``arg`` (``--config=...py:smoke``)."""
    return select_variant(maml_config(5, 1, paper_test_accuracy=(98.7, 0.4)), arg, VARIANTS)
