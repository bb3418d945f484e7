"""MAML++ on Omniglot 5-way 1-shot (Antoniou et al., 2019, reference settings).

Meta-batch 8, 5 inner steps at train and test, alpha0 0.1 learned per layer and step
(LSLR), per-step batch norm, multi-step loss annealed over 10 epochs, second order from
the start (``first_order_epochs=0``, the reference's ``first_order_to_second_order_epoch=-1``),
Adam 1e-3 cosine-annealed to 1e-5 over 100 epochs of 500 iterations, 1 query image per class,
64 filters, reference class split (1150/50/423), rotation augmentation on the training
tasks, 600 fixed validation / test tasks.

Run:
    python -m experiments.train --config experiments/configs/omniglot_5w1s_mamlpp.py \\
        --workdir runs/omniglot_5w1s_mamlpp --data-dir ../shared/data/omniglot
    python -m experiments.evaluate --workdir runs/omniglot_5w1s_mamlpp --data-dir ../shared/data/omniglot

Expected runtime: about 7 min on an NVIDIA H200 with ``--set conv_impl=patches``
(estimated from the 20-epoch run of ``omniglot_5w1s_mamlpp_gpu_short``, 2026-11-26: 3.6 s per
epoch of 500 steps plus validation, ~35 s of compilation); about 3x longer with the
default convolution (grouped cuDNN convolutions, benchmarks/RESULTS.md). The reference
PyTorch code (2 meta-steps/s on an H100) needs ~7 h.
On a 2-core CPU a second-order step takes ~1.0 s (5w1s) / ~3.8 s (20w1s) (benchmarks/RESULTS.md,
measured 2026-11-26 after the max-pool gradient fix): half a day to days.
Paper (MAML++ test accuracy): 99.47 +- 0.05 %.
"""

from experiments.config_lib import mamlpp_config


def get_config():
    return mamlpp_config(5, 1, paper_test_accuracy=(99.47, 0.05))
