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

Expected runtime: about 3 minutes train + 45 s evaluate on a busy 2-core CPU (measured:
3m02s + 42s, load average ~7). Measured test accuracy (600 tasks, best checkpoint):
79.4 +- 1.5 % (val 79.0 %); top-3 ensemble 77.8 +- 1.5 %. Far from converged by design.
Paper (full 100-epoch run): 99.47 +- 0.05 %.
"""

from experiments.config_lib import mamlpp_config


def get_config():
    return mamlpp_config(
        5, 1, name="omniglot_5w1s_mamlpp_smoke", num_filters=16, num_epochs=3,
        iterations_per_epoch=100, steps_per_call=50, num_val_tasks=100, num_test_tasks=600,
        eval_batch_size=20,
        paper_test_accuracy=(99.47, 0.05))
