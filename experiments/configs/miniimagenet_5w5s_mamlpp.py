"""MAML++ on mini-ImageNet 5-way 5-shot (Antoniou et al., 2019, reference code's values).

Ravi and Larochelle's split (64/16/20 classes of 600 images, 84x84 RGB), 48 filters,
meta-batch 2, 15 query images per class, 5 inner steps at train and test, learned
per-layer per-step alpha (LSLR) starting at 0.1 (preset "reference", the default: the
reference code starts every rate at 0.1 although its mini-ImageNet configs say 0.01; the
"paper" preset is ``config_lib.miniimagenet_config(5, 5, inner_lr_preset="paper")``, or
``--config.inner_lr=0.01``), per-step batch norm, multi-step loss annealed over 15 epochs,
second order, element-wise meta-gradient clipping to +-10, Adam 1e-3 cosine-annealed to 1e-5
over 100 epochs of 500 iterations, no augmentation, 600 fixed validation / test tasks.

Run (the data cannot be downloaded: see the README, "mini-ImageNet", for the layouts):
    python -m experiments.train --config=experiments/configs/miniimagenet_5w5s_mamlpp.py \\
        --workdir runs/miniimagenet_5w5s_mamlpp --data-dir /path/to/miniimagenet
    python -m experiments.evaluate --workdir runs/miniimagenet_5w5s_mamlpp \\
        --data-dir /path/to/miniimagenet

CPU smoke variant (``:smoke``: 8 filters, 32 pixels, 5 query images per class, 2 epochs of
20 iterations, 50 validation / test tasks, a mini-ImageNet of any size; checks that the
data, the model and the training loop run end to end; a few minutes on a 2-core CPU after
the images are decoded, not measured on the real data):
    python -m experiments.train --config=experiments/configs/miniimagenet_5w5s_mamlpp.py:smoke \\
        --workdir runs/smoke/miniimagenet_5w5s_mamlpp_smoke --data-dir /path/to/miniimagenet

Expected runtime: not measured on a GPU yet. On a 2-core CPU a 5-way 1-shot second-order
step took ~11 s (benchmarks/RESULTS.md, table 5, an older formulation): about a week for the
50,000 iterations. The first run decodes the 60,000 images once (uint8 cache beside them).
Paper (MAML++ test accuracy): 68.32 +- 0.44 %.
"""

from experiments.config_lib import MINIIMAGENET_SMOKE, miniimagenet_config, select_variant

VARIANTS = {"smoke": MINIIMAGENET_SMOKE}


def get_config(arg=None):
    """The paper's config, or the variant ``arg`` (``--config=...py:smoke``)."""
    return select_variant(
        miniimagenet_config(5, 5, "mamlpp", paper_test_accuracy=(68.32, 0.44)), arg, VARIANTS)
