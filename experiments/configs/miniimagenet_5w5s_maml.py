"""MAML on mini-ImageNet 5-way 5-shot (Finn et al., 2017), the MAML++ paper's baseline.

Ravi and Larochelle's split (64/16/20 classes of 600 images, 84x84 RGB), 32 filters,
meta-batch 2, 15 query images per class, 5 inner steps at train and 10 at test, fixed scalar
alpha 0.01, final-step loss, shared batch norm, second order, Adam 1e-3 (constant), 60,000
iterations (120 epochs of 500), no augmentation, 600 fixed validation / test tasks.

Run (the data cannot be downloaded: see the README, "mini-ImageNet", for the layouts):
    python -m experiments.train --config=experiments/configs/miniimagenet_5w5s_maml.py \\
        --workdir runs/miniimagenet_5w5s_maml --data-dir /path/to/miniimagenet
    python -m experiments.evaluate --workdir runs/miniimagenet_5w5s_maml \\
        --data-dir /path/to/miniimagenet

CPU smoke variant (``:smoke``: 8 filters, 32 pixels, 5 query images per class, 2 epochs of
20 iterations, 50 validation / test tasks, a mini-ImageNet of any size; checks that the
data, the model and the training loop run end to end; a few minutes on a 2-core CPU after
the images are decoded, not measured on the real data):
    python -m experiments.train --config=experiments/configs/miniimagenet_5w5s_maml.py:smoke \\
        --workdir runs/smoke/miniimagenet_5w5s_maml_smoke --data-dir /path/to/miniimagenet

Expected runtime: not measured (no GPU run yet; a 2-core CPU needs days).
Paper (MAML test accuracy, Finn et al.): 63.11 +- 0.92 %.
"""

from experiments.config_lib import MINIIMAGENET_SMOKE, miniimagenet_config, select_variant

VARIANTS = {"smoke": MINIIMAGENET_SMOKE}


def get_config(arg=None):
    """The paper's config, or the variant ``arg`` (``--config=...py:smoke``)."""
    return select_variant(
        miniimagenet_config(5, 5, "maml", paper_test_accuracy=(63.11, 0.92)), arg, VARIANTS)
