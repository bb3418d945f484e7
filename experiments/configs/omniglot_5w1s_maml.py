"""MAML on Omniglot 5-way 1-shot (Finn et al., 2017), the MAML++ paper's baseline.

Finn et al.'s settings (``config_lib.maml_config``): fixed scalar alpha 0.4, 1 inner
step(s) in training and 3 at test, meta-batch 32, final-step loss, shared batch norm,
constant Adam 1e-3 for 120 epochs of 500 iterations, K query images per class, the 'maml'
class split.

Run:
    python -m experiments.train --config=experiments/configs/omniglot_5w1s_maml.py \\
        --workdir runs/omniglot_5w1s_maml --data-dir ../shared/data/omniglot
    python -m experiments.evaluate --workdir runs/omniglot_5w1s_maml \\
        --data-dir ../shared/data/omniglot
CPU smoke variant (``:smoke``: 16 filters, 3 epochs of 100 iterations; far from converged):
    python -m experiments.train --config=experiments/configs/omniglot_5w1s_maml.py:smoke \\
        --workdir runs/smoke/omniglot_5w1s_maml_smoke --data-dir ../shared/data/omniglot

Expected runtime (estimate): about 30 minutes on one H100/H200 (the 20-epoch 5w1s GPU run
on the results page scaled to this schedule); the smoke variant a few minutes on a
2-core CPU.
Paper (MAML test accuracy): 98.7 +- 0.4 %. Measured results: docs/results.md.
"""

from experiments.config_lib import OMNIGLOT_SMOKE, maml_config, select_variant

VARIANTS = {"smoke": OMNIGLOT_SMOKE}


def get_config(arg=None):
    """The paper's config, or the variant ``arg`` (``--config=...py:smoke``)."""
    return select_variant(maml_config(5, 1, paper_test_accuracy=(98.7, 0.4)), arg, VARIANTS)
