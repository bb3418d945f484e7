"""Smoke test of MAML++ on mini-ImageNet 5-way 1-shot, sized for a laptop CPU.

Same recipe as ``miniimagenet_5w1s_mamlpp`` (48 -> 8 filters, 84 -> 32 pixels, 5 query
images per class, 2 epochs of 20 iterations, 50 validation / test tasks): checks that the
data, the model and the training loop run end to end on real data; far from converged.
Accepts a mini-ImageNet of any size (``dataset_strict=False``).

Run:
    python -m experiments.train --config experiments/configs/miniimagenet_5w1s_mamlpp_smoke.py \\
        --workdir runs/smoke/miniimagenet_5w1s_mamlpp_smoke --data-dir /path/to/miniimagenet
    python -m experiments.evaluate --workdir runs/smoke/miniimagenet_5w1s_mamlpp_smoke \\
        --data-dir /path/to/miniimagenet

Expected runtime: a few minutes on a 2-core CPU after the images are decoded (not measured
on the real data: it is not available on the machines this was written on).
Paper (full run, not this one): 52.15 +- 0.26 %.
"""

from experiments.config_lib import miniimagenet_config


def get_config():
    return miniimagenet_config(
        5, 1, "mamlpp", name="miniimagenet_5w1s_mamlpp_smoke", num_filters=8, image_size=32,
        q_query=5, q_query_eval=5, num_epochs=2, iterations_per_epoch=20, steps_per_call=10,
        msl_epochs=1, num_val_tasks=50, num_test_tasks=50, dataset_strict=False,
        paper_test_accuracy=(52.15, 0.26))
