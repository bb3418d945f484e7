"""The MAML++ claims study on sinusoid regression: 7 methods x K in {5, 10} x 3 seeds.

Each MAML++ component alone and together (MAML 1 and 5 steps, + MSL, + LSLR, MAML++,
per-parameter rates with and without MSL), each with the MAML paper's budget and optimiser
(Adam 1e-3, no cosine annealing) so that only the named component differs; K is the support
size in training and test; evaluated up to twice the trained steps. Learned rates start at
0.01 with a 10x smaller meta learning rate (additive updates: the claims study predates the
log-space default for per-weight rates).

Run:      python -m experiments.study_grid --grid experiments/configs/study_sinusoid.py \\
              --root runs/study_sinusoid
          (resumable: finished cells are skipped; ``--smoke`` for a seconds-long CPU check)
Paper:    the MAML++ paper has no sinusoid experiment; MAML (Finn et al. 2017): 5-shot test
          MSE 0.67 / 0.38 / 0.35 after 1 / 5 / 10 steps. Measured results: docs/results.md.
"""

from experiments.config_lib import sinusoid_config
from experiments.study_grid import StudyGrid

N = 5
# --smoke: every cell at a few seconds' scale (its numbers mean nothing).
SMOKE = dict(num_epochs=2, iterations_per_epoch=20, meta_batch_size=4, steps_per_call=20,
             msl_epochs=1)


def methods():
    """``{name: the keys in which the method differs from sinusoid_config}``."""
    fixed = dict(lr_granularity="scalar", learn_inner_lrs=False)
    # Learned rates: additive updates at 0.1x the meta learning rate and no inner-gradient
    # clip, for per-weight rates too (the study predates their log-space / clip defaults).
    learned = dict(learn_inner_lrs=True, rate_update="reference_0.1x", inner_grad_clip=None)
    return {
        "MAML-1step": dict(num_inner_steps=1, msl=False, **fixed),
        "MAML": dict(num_inner_steps=N, msl=False, **fixed),
        "MAML+MSL": dict(num_inner_steps=N, msl=True, msl_epochs=10, **fixed),
        "MAML+LSLR": dict(num_inner_steps=N, msl=False, lr_granularity="layer_step", **learned),
        "MAML++": dict(num_inner_steps=N, msl=True, msl_epochs=10, lr_granularity="layer_step",
                       **learned),
        # Meta-SGD style: one learned rate per parameter (and step), final-step loss.
        "Meta-SGD": dict(num_inner_steps=N, msl=False, lr_granularity="parameter", **learned),
        # ... and with MSL: MAML++ with per-parameter instead of per-layer rates.
        "MAML++-param": dict(num_inner_steps=N, msl=True, msl_epochs=10,
                             lr_granularity="parameter", **learned),
    }


def get_config():
    """Cells ``<method>_K<k>_s<seed>``: K support (and query) points in training and test."""
    configs = {f"{name}_K{k}": sinusoid_config(name=name, k_shot=k, q_query=k,
                                               sinusoid_eval_shots=(k,), **updates)
               for k in (5, 10) for name, updates in methods().items()}
    return StudyGrid(configs=configs, seeds=(0, 1, 2), smoke=SMOKE)
