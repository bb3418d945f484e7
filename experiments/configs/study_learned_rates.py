"""Learned inner rates on sinusoid regression: MAML, MAML++, Meta-SGD, per-weight rates, ANIL.

Six methods x K in {5, 10} x 3 seeds on the same **reduced budget** (20,000 outer steps; the
MAML paper's sinusoid used 70,000): MAML (fixed alpha, 5 steps), MAML++ (this repository's
sinusoid recipe: LSLR, additive updates at 0.1x, MSL), Meta-SGD with 1 and 5 steps,
per-weight-and-step rates with MSL, and ANIL (the output layer alone, fixed alpha).
Per-weight rates use their library defaults: the log-space rate update and the
inner-gradient clip (``mj.default_inner_grad_clip``).

Run:      python -m experiments.study_grid --grid experiments/configs/study_learned_rates.py \\
              --root runs/study_learned_rates
          (resumable; ``--smoke`` for a seconds-long CPU check)
Paper:    none for this grid; MAML (Finn et al. 2017, 70,000 iterations): 5-shot test MSE
          0.67 / 0.38 / 0.35 after 1 / 5 / 10 steps. Measured results: docs/results.md.
"""

import maml_jax as mj
from experiments.configs import sinusoid_paper
from experiments.sinusoid import MethodConfig, SinusoidConfig
from experiments.study_grid import SinusoidGrid

N = 5
# The per-weight granularities' defaults ("auto" in the Omniglot configs): log-space rate
# update and the inner-gradient clip; both resolve to the same values for meta_sgd.
PER_WEIGHT = dict(inner_lr=0.01, learn_inner_lrs=True, **mj.rate_update_preset("log"),
                  inner_grad_clip=mj.default_inner_grad_clip("parameter"))


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
