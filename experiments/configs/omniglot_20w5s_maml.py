"""MAML on Omniglot 20-way 5-shot (Finn et al., 2017), the MAML++ paper's baseline.

Finn et al.'s settings (``config_lib.maml_config``): fixed scalar alpha 0.1, 5 inner
step(s) in training and 5 at test, meta-batch 16, final-step loss, shared batch norm,
constant Adam 1e-3 for 120 epochs of 500 iterations, K query images per class, the 'maml'
class split.

Run:
    python -m experiments.train --config=experiments/configs/omniglot_20w5s_maml.py \\
        --workdir runs/omniglot_20w5s_maml --data-dir ../shared/data/omniglot
    python -m experiments.evaluate --workdir runs/omniglot_20w5s_maml \\
        --data-dir ../shared/data/omniglot
CPU smoke variant (``:smoke``: 16 filters, 3 epochs of 100 iterations; far from converged):
    python -m experiments.train --config=experiments/configs/omniglot_20w5s_maml.py:smoke \\
        --workdir runs/smoke/omniglot_20w5s_maml_smoke --data-dir ../shared/data/omniglot

Expected runtime (estimate): one to two hours on one H100/H200 (the 20-epoch 5w1s GPU run
on the results page scaled to this schedule); the smoke variant a few minutes on a
2-core CPU.
Paper (MAML test accuracy): 98.9 +- 0.2 %. Measured results: docs/results.md.
"""

from experiments.config_lib import OMNIGLOT_SMOKE, maml_config, select_variant

VARIANTS = {"smoke": OMNIGLOT_SMOKE}


def get_config(arg=None):
    """The paper's config, or the variant ``arg`` (``--config=...py:smoke``)."""
    return select_variant(maml_config(20, 5, paper_test_accuracy=(98.9, 0.2)), arg, VARIANTS)
