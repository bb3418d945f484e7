"""Smoke test of MAML++ on the real Omniglot, 5-way 1-shot, sized for a laptop CPU.

Same recipe as ``omniglot_5w1s_mamlpp`` (LSLR, per-step BN, MSL, second order, cosine
Adam, reference split, rotations, 5 inner steps) but 16 filters and 3 epochs of 100
iterations; 100 validation tasks, the full 600 fixed test tasks.
The library's CPU defaults (im2col convolutions, vmapped tasks) keep it fast on a CPU.

Run:
    python -m experiments.train --config experiments/configs/omniglot_5w1s_mamlpp_smoke.py \\
        --workdir runs/smoke/omniglot_5w1s_mamlpp_smoke --data-dir ../shared/data/omniglot
    python -m experiments.evaluate --workdir runs/smoke/omniglot_5w1s_mamlpp_smoke \\
        --data-dir ../shared/data/omniglot

Expected runtime: about 1.5 minutes train + 40 s evaluate on an idle 2-core CPU (measured
2026-11-26 on an Intel Xeon, whole commands: 97 s + 38 s). Measured test accuracy (600 tasks,
best checkpoint): 78.2 +- 1.6 %; top-3 ensemble 76.7 +- 1.6 %. Far from converged by design.
Paper (full 100-epoch run): 99.47 +- 0.05 %.
"""

from experiments.config_lib import mamlpp_config


def get_config():
    return mamlpp_config(
        5, 1, name="omniglot_5w1s_mamlpp_smoke", num_filters=16, num_epochs=3,
        iterations_per_epoch=100, steps_per_call=50, num_val_tasks=100, num_test_tasks=600,
        eval_batch_size=20,
        paper_test_accuracy=(99.47, 0.05))
