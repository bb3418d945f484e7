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

from experiments.config_lib import sinusoid_config
from experiments.study_grid import StudyGrid

N = 5
# The reduced budget: 40 epochs of 500 iterations (20,000 outer steps).
BUDGET = dict(num_epochs=40, iterations_per_epoch=500)
# The per-weight granularities' library defaults ("auto"): the log-space rate update and the
# inner-gradient clip (maml_jax.default_inner_grad_clip: 100, for meta_sgd too).
PER_WEIGHT = dict(learn_inner_lrs=True, rate_update="auto", inner_grad_clip="auto")
# --smoke: every cell at a few seconds' scale (its numbers mean nothing).
SMOKE = dict(num_epochs=2, iterations_per_epoch=20, meta_batch_size=4, steps_per_call=20,
             msl_epochs=1)


def methods():
    """``{name: the keys in which the method differs from sinusoid_config}``."""
    fixed = dict(lr_granularity="scalar", learn_inner_lrs=False)
    return {
        "MAML": dict(num_inner_steps=N, msl=False, **fixed),
        # This repository's sinusoid MAML++ recipe: additive rate updates at 0.1x.
        "MAML++": dict(num_inner_steps=N, msl=True, msl_epochs=4, lr_granularity="layer_step",
                       learn_inner_lrs=True, rate_update="reference_0.1x"),
        # Meta-SGD as published: one rate per weight, one inner step.
        "Meta-SGD": dict(num_inner_steps=1, msl=False, lr_granularity="meta_sgd", **PER_WEIGHT),
        "Meta-SGD-5": dict(num_inner_steps=N, msl=False, lr_granularity="meta_sgd",
                           **PER_WEIGHT),
        "PerWeightStep+MSL": dict(num_inner_steps=N, msl=True, msl_epochs=4,
                                  lr_granularity="parameter", **PER_WEIGHT),
        "ANIL": dict(num_inner_steps=N, msl=False, inner_loop="head", **fixed),
    }


def get_config():
    """Cells ``<method>_K<k>_s<seed>``: K support (and query) points in training and test."""
    configs = {f"{name}_K{k}": sinusoid_config(name=name, k_shot=k, q_query=k,
                                               sinusoid_eval_shots=(k,), **BUDGET, **updates)
               for k in (5, 10) for name, updates in methods().items()}
    return StudyGrid(configs=configs, seeds=(0, 1, 2), smoke=SMOKE)
