"""MAML++ on Omniglot 5-way 1-shot (Antoniou et al., 2019, reference settings).

Meta-batch 8, 5 inner steps at train and test, alpha0 0.1 learned per layer and step
(LSLR), per-step batch norm, multi-step loss annealed over 10 epochs, second order from
the start (``first_order_epochs=0``, the reference's ``first_order_to_second_order_epoch=-1``),
Adam 1e-3 cosine-annealed to 1e-5 over 100 epochs of 500 iterations, 1 query image per class,
64 filters, reference class split (1150/50/423), rotation augmentation on the training
tasks, 600 fixed validation / test tasks.

Run:
    python -m experiments.train --config=experiments/configs/omniglot_5w1s_mamlpp.py \\
        --workdir runs/omniglot_5w1s_mamlpp --data-dir ../shared/data/omniglot
    python -m experiments.evaluate --workdir runs/omniglot_5w1s_mamlpp \\
        --data-dir ../shared/data/omniglot

CPU smoke variant (``:smoke``: 16 filters, 3 epochs of 100 iterations, 100 validation
tasks, the full 600 test tasks; far from converged by design):
    python -m experiments.train --config=experiments/configs/omniglot_5w1s_mamlpp.py:smoke \\
        --workdir runs/smoke/omniglot_5w1s_mamlpp_smoke --data-dir ../shared/data/omniglot
    python -m experiments.evaluate --workdir runs/smoke/omniglot_5w1s_mamlpp_smoke \\
        --data-dir ../shared/data/omniglot
  about 1.5 minutes train + 40 s evaluate on an idle 2-core CPU (measured 2026-11-26 on an
  Intel Xeon, whole commands: 97 s + 38 s); test accuracy (600 tasks, best checkpoint)
  78.2 +- 1.6 %, top-3 ensemble 76.7 +- 1.6 %.
Short GPU schedule (``:gpu_short``: 20 epochs instead of 100, cosine annealing over those
20, MSL annealed over the first 2; ``benchmarks/gpu_session.sh`` overrides ``num_epochs`` /
``msl_epochs`` with what the GPU's measured step rate fits into its budget, and the run's
``config.json`` records the schedule actually run):
    python -m experiments.train --config=experiments/configs/omniglot_5w1s_mamlpp.py:gpu_short \\
        --workdir runs/omniglot_5w1s_mamlpp_gpu_short --data-dir ../shared/data/omniglot \\
        --max-minutes 4
  on an NVIDIA H200 with ``--config.conv_impl=patches``: 111 s of training (compilation
  included) plus 23 s of evaluation; 99.03 +- 0.38 % test accuracy (best checkpoint),
  99.13 +- 0.35 % (top-5 ensemble); measured 2026-11-26 by gpu_session.sh, jax 0.11.2.

Expected runtime: about 7 min on an NVIDIA H200 with ``--config.conv_impl=patches``
(estimated from the 20-epoch run of the ``:gpu_short`` variant, 2026-11-26: 3.6 s per
epoch of 500 steps plus validation, ~35 s of compilation); about 3x longer with the
default convolution (grouped cuDNN convolutions, benchmarks/RESULTS.md). The reference
PyTorch code (2 meta-steps/s on an H100) needs ~7 h.
On a 2-core CPU a second-order step takes ~1.0 s (5w1s) / ~3.8 s (20w1s) (benchmarks/RESULTS.md,
measured 2026-11-26 after the max-pool gradient fix): half a day to days.
Paper (MAML++ test accuracy): 99.47 +- 0.05 %.
"""

from experiments.config_lib import OMNIGLOT_SMOKE, mamlpp_config, select_variant

VARIANTS = {"smoke": OMNIGLOT_SMOKE,
            "gpu_short": dict(num_epochs=20, msl_epochs=2)}


def get_config(arg=None):
    """The paper's config, or the variant ``arg`` (``--config=...py:smoke``)."""
    return select_variant(mamlpp_config(5, 1, paper_test_accuracy=(99.47, 0.05)), arg, VARIANTS)
