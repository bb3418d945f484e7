"""Learned inner rates on sinusoid regression (issue 21): MAML, MAML++, Meta-SGD, per-weight
rates with MSL and ANIL, K in {5, 10}, 3 seeds, all on the same reduced budget.

Run:      python -m experiments.study_grid --grid experiments/configs/study_learned_rates.py \
              --root runs/study_learned_rates
          (resumable; ``--smoke`` for a seconds-long CPU check)
Runtime:  12 minutes on a 2-core Intel Xeon CPU with two processes (``--only='*_K5_*'``
          and ``--only='*_K10_*'`` with ``--no-study``, then the study, 25 s), measured
          2026-12-03; see the README, "Learned inner rates".
Budget:   20,000 outer steps per run (the MAML paper's sinusoid used 70,000: **reduced**),
          meta-batch 25, Adam 1e-3 without annealing, MSL over the first 4 of 40 epochs.
Paper:    MAML (Finn et al. 2017, K=10 training, 1 step): 5-shot 0.67 / 0.38 / 0.35 after
          1 / 5 / 10 steps (70,000 iterations; not comparable with this budget).

Per-weight rates use the log-space rate update (Adam on log(rate) at 0.1x the meta learning
rate) without the inner-gradient clip that is now their library default (the README's rows
were measured before it existed); MAML++ keeps this repository's sinusoid recipe
(LSLR with additive updates at 0.1x, as ``study_sinusoid.py``); ANIL adapts the output
layer alone with a fixed rate.
"""

import maml_jax as mj
from experiments.configs import sinusoid_paper
from experiments.sinusoid import MethodConfig, SinusoidConfig
from experiments.study_grid import SinusoidGrid

N = 5
PER_WEIGHT = dict(inner_lr=0.01, learn_inner_lrs=True, **mj.rate_update_preset("log"))


def methods():
    fixed = dict(inner_lr=0.01, granularity="scalar", learn_inner_lrs=False)
    return (
        MethodConfig(name="MAML", num_inner_steps=N, msl=False, **fixed),
        MethodConfig(name="MAML++", num_inner_steps=N, msl=True, msl_epochs=4,
                     granularity="layer_step", inner_lr=0.01, learn_inner_lrs=True,
                     inner_lr_scale=0.1),
        # Meta-SGD as published: one rate per weight, one inner step.
        MethodConfig(name="Meta-SGD", num_inner_steps=1, msl=False, granularity="meta_sgd",
                     **PER_WEIGHT),
        MethodConfig(name="Meta-SGD-5", num_inner_steps=N, msl=False, granularity="meta_sgd",
                     **PER_WEIGHT),
        MethodConfig(name="PerWeightStep+MSL", num_inner_steps=N, msl=True, msl_epochs=4,
                     granularity="parameter", **PER_WEIGHT),
        MethodConfig(name="ANIL", num_inner_steps=N, msl=False, inner_loop="head", **fixed),
    )


def get_config():
    base = SinusoidConfig(methods=(), iterations=20_000, iterations_per_epoch=500,
                          paper=sinusoid_paper.PAPER)
    return SinusoidGrid(base=base, methods=methods(), shots=(5, 10), seeds=(0, 1, 2),
                        smoke=dict(iterations=40, iterations_per_epoch=20, meta_batch_size=4,
                                   steps_per_call=20))
