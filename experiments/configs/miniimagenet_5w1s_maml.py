"""MAML on mini-ImageNet 5-way 1-shot (Finn et al., 2017), the MAML++ paper's baseline.

``config_lib.miniimagenet_config``: Ravi and Larochelle's split (84x84 RGB), 32 filters,
meta-batch 4, 15 query images per class, 5 inner steps in training and 10 at test,
fixed scalar alpha 0.01, final-step loss, shared batch norm, constant Adam 1e-3 for 120
epochs of 500 iterations.

Run (the data cannot be downloaded; its layouts: docs/experiments.md, "mini-ImageNet"):
    python -m experiments.train --config=experiments/configs/miniimagenet_5w1s_maml.py \\
        --workdir runs/miniimagenet_5w1s_maml --data-dir /path/to/miniimagenet
    python -m experiments.evaluate --workdir runs/miniimagenet_5w1s_maml \\
        --data-dir /path/to/miniimagenet
CPU smoke variant (``:smoke``: 8 filters, 32 pixels, 2 epochs of 20 iterations, any
mini-ImageNet-layout folder; checks the path end to end):
    python -m experiments.train --config=experiments/configs/miniimagenet_5w1s_maml.py:smoke \\
        --workdir runs/smoke/miniimagenet_5w1s_maml_smoke --data-dir /path/to/miniimagenet

Expected runtime (estimate; not yet run at full scale): several hours on one H100/H200
(84x84 RGB, 15 query images per class); the smoke variant about a minute on a 2-core
CPU.
Paper (MAML, Finn et al. test accuracy): 48.70 +- 1.84 %. Measured results: docs/results.md.
"""

from experiments.config_lib import MINIIMAGENET_SMOKE, miniimagenet_config, select_variant

VARIANTS = {"smoke": MINIIMAGENET_SMOKE}


def get_config(arg=None):
    """The paper's config, or the variant ``arg`` (``--config=...py:smoke``)."""
    return select_variant(
        miniimagenet_config(5, 1, "maml", paper_test_accuracy=(48.70, 1.84)), arg, VARIANTS)
