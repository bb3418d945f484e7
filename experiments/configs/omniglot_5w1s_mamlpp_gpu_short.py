"""MAML++ on Omniglot 5-way 1-shot, the paper's recipe on a shorter cosine schedule (one GPU call).

Everything as ``omniglot_5w1s_mamlpp`` (64 filters, meta-batch 8, 5 inner steps, LSLR,
per-step BN, second order, Adam 1e-3 -> 1e-5, reference split, rotations, 600 fixed
validation / test tasks, validation every epoch of 500 iterations) except the schedule:
20 epochs instead of 100, the cosine annealing over those 20, and the multi-step loss
annealed over the first 2 epochs (the paper's 10 of 100, kept in proportion).
``benchmarks/gpu_session.sh`` overrides ``num_epochs`` / ``msl_epochs`` (same 10 %
proportion) with what the GPU's measured step rate fits into its training budget, and
the run's ``config.json`` records the schedule actually run.

Run (on a GPU):
    python -m experiments.train --config experiments/configs/omniglot_5w1s_mamlpp_gpu_short.py \\
        --workdir runs/omniglot_5w1s_mamlpp_gpu_short --data-dir ../shared/data/omniglot \\
        --max-minutes 4
    python -m experiments.evaluate --workdir runs/omniglot_5w1s_mamlpp_gpu_short \\
        --data-dir ../shared/data/omniglot

Expected runtime: on an NVIDIA H200 with ``--set conv_impl=patches``, 111 s of training
(compilation included) plus 23 s of evaluation; 99.03 +- 0.38 % test accuracy (best
checkpoint), 99.13 +- 0.35 % (top-5 ensemble); measured 2026-11-26 by gpu_session.sh,
jax 0.11.2 (README, Omniglot results). A 2-core CPU needs ~1.0 s per step: ~3 h.
Paper (full 100-epoch schedule, not this one): 99.47 +- 0.05 %.
"""

from experiments.config_lib import mamlpp_config


def get_config():
    return mamlpp_config(5, 1, name="omniglot_5w1s_mamlpp_gpu_short", num_epochs=20,
                         msl_epochs=2, paper_test_accuracy=(99.47, 0.05))
