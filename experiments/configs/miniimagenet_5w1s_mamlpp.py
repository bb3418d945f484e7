"""MAML++ on mini-ImageNet 5-way 1-shot (Antoniou et al., 2019), the reference code's values.

``config_lib.miniimagenet_config``: Ravi and Larochelle's split (84x84 RGB), 48 filters,
meta-batch 2, 15 query images per class, 5 inner steps, LSLR from 0.1 (preset "reference";
``inner_lr_preset="paper"`` or ``--config.inner_lr=0.01`` for the configs' 0.01), per-step
batch norm, MSL over 15 epochs, meta-gradients clipped to +-10, Adam 1e-3 cosine-annealed
over 100 epochs of 500 iterations.

Run (the data cannot be downloaded; its layouts: docs/experiments.md, "mini-ImageNet"):
    python -m experiments.train --config=experiments/configs/miniimagenet_5w1s_mamlpp.py \\
        --workdir runs/miniimagenet_5w1s_mamlpp --data-dir /path/to/miniimagenet
    python -m experiments.evaluate --workdir runs/miniimagenet_5w1s_mamlpp \\
        --data-dir /path/to/miniimagenet
CPU smoke variant (``:smoke``: 8 filters, 32 pixels, 2 epochs of 20 iterations, any
mini-ImageNet-layout folder; checks the path end to end):
    python -m experiments.train --config=experiments/configs/miniimagenet_5w1s_mamlpp.py:smoke \\
        --workdir runs/smoke/miniimagenet_5w1s_mamlpp_smoke --data-dir /path/to/miniimagenet

Expected runtime (estimate; not yet run at full scale): several hours on one H100/H200
(84x84 RGB, 15 query images per class); the smoke variant about a minute on a 2-core
CPU.
Paper (MAML++ test accuracy): 52.15 +- 0.26 %. Measured results: docs/results.md.
"""

from experiments.config_lib import MINIIMAGENET_SMOKE, miniimagenet_config, select_variant

VARIANTS = {"smoke": MINIIMAGENET_SMOKE}


def get_config(arg=None):
    """The paper's config, or the variant ``arg`` (``--config=...py:smoke``)."""
    return select_variant(
        miniimagenet_config(5, 1, "mamlpp", paper_test_accuracy=(52.15, 0.26)), arg, VARIANTS)
