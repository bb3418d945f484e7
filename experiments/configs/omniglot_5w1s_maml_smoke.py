"""Smoke test of MAML on the real Omniglot, 5-way 1-shot, sized for a laptop CPU.

Same recipe as ``omniglot_5w1s_maml`` (fixed alpha 0.4, 1 inner step at train / 3 at test,
final-step loss, shared BN, constant Adam 1e-3, 'maml' split, rotations) but 16
filters, meta-batch 32 and 3 epochs of 100 iterations; 100 validation tasks, the full
600 fixed test tasks.

Run:
    python -m experiments.train --config experiments/configs/omniglot_5w1s_maml_smoke.py \\
        --workdir runs/smoke/omniglot_5w1s_maml_smoke --data-dir ../shared/data/omniglot
    python -m experiments.evaluate --workdir runs/smoke/omniglot_5w1s_maml_smoke \\
        --data-dir ../shared/data/omniglot

Expected runtime: about 1.5 minutes train + 30 s evaluate on an idle 2-core CPU (measured
2026-11-26 on an Intel Xeon, whole commands: 74 s + 29 s). Measured test accuracy (600 tasks,
best checkpoint): 73.3 +- 1.6 %; top-3 ensemble 69.1 +- 1.6 %. Far from converged by design.
Paper (full 60,000-iteration run): 98.7 +- 0.4 %.
"""

from experiments.config_lib import maml_config


def get_config():
    return maml_config(
        5, 1, name="omniglot_5w1s_maml_smoke", num_filters=16, num_epochs=3,
        iterations_per_epoch=100, steps_per_call=50, num_val_tasks=100, num_test_tasks=600,
        eval_batch_size=20,
        paper_test_accuracy=(98.7, 0.4))
