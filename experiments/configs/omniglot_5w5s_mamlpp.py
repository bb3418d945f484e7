"""MAML++ on Omniglot 5-way 5-shot (Antoniou et al., 2019), the reference code's settings.

The MAML++ recipe (``config_lib.mamlpp_config``): Conv4 with 64 filters and per-step batch
norm, 5 inner steps, per-layer per-step learned rates from 0.1 (LSLR), multi-step loss
annealed over 10 epochs, second order from the start, Adam 1e-3 cosine-annealed over 100
epochs of 500 iterations, meta-batch 8, 1 query image per class, the reference class split.

Run:
    python -m experiments.train --config=experiments/configs/omniglot_5w5s_mamlpp.py \\
        --workdir runs/omniglot_5w5s_mamlpp --data-dir ../shared/data/omniglot
    python -m experiments.evaluate --workdir runs/omniglot_5w5s_mamlpp \\
        --data-dir ../shared/data/omniglot
CPU smoke variant (``:smoke``: 16 filters, 3 epochs of 100 iterations; far from converged):
    python -m experiments.train --config=experiments/configs/omniglot_5w5s_mamlpp.py:smoke \\
        --workdir runs/smoke/omniglot_5w5s_mamlpp_smoke --data-dir ../shared/data/omniglot

Expected runtime (estimate): about 45 minutes on one H100/H200 (the 20-epoch 5w1s GPU run
on the results page scaled to this schedule); the smoke variant a few minutes on a
2-core CPU.
Paper (MAML++ test accuracy): 99.93 +- 0.09 %. Measured results: docs/results.md.
"""

from experiments.config_lib import OMNIGLOT_SMOKE, mamlpp_config, select_variant

VARIANTS = {"smoke": OMNIGLOT_SMOKE}


def get_config(arg=None):
    """The paper's config, or the variant ``arg`` (``--config=...py:smoke``)."""
    return select_variant(mamlpp_config(5, 5, paper_test_accuracy=(99.93, 0.09)), arg, VARIANTS)
