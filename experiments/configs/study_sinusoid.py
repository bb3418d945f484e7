"""The MAML++ claims study on sinusoid regression: 7 methods x K in {5, 10} x 3 seeds.

Run:      python -m experiments.study_grid --grid experiments/configs/study_sinusoid.py \
              --root runs/study_sinusoid
          (resumable: finished cells are skipped; ``--smoke`` for a seconds-long CPU check)
Runtime:  see the README's "MAML++ claims" section (measured on a 2-core CPU; a 40-unit MLP
          does not need a GPU).
Paper:    MAML (Finn et al. 2017): K=10 training, 1 inner step at alpha=0.01, meta-batch 25,
          Adam 1e-3, 70,000 iterations; 5-shot test MSE 0.67 / 0.38 / 0.35 after 1 / 5 / 10
          steps. The MAML++ paper has no sinusoid experiment: the other rows are this study's
          ablation, each trained with N = 5 inner steps (the 1-step MAML row excepted) and
          evaluated up to 2N = 10.

Every method has the paper's budget and optimiser (Adam 1e-3, no cosine annealing, so that
only the named component differs); K is the support size in training and test. Learned
rates start at 0.01 and get a 10x smaller meta learning rate (``inner_lr_scale=0.1``; with
plain Adam at 1e-3 they blew up the inner loop, see sinusoid_paper.py).
"""

from experiments.configs import sinusoid_paper
from experiments.sinusoid import MethodConfig, SinusoidConfig
from experiments.study_grid import SinusoidGrid

N = 5


def methods():
    fixed = dict(inner_lr=0.01, granularity="scalar", learn_inner_lrs=False)
    learned = dict(inner_lr=0.01, learn_inner_lrs=True, inner_lr_scale=0.1)
    return (
        MethodConfig(name="MAML-1step", num_inner_steps=1, msl=False, **fixed),
        MethodConfig(name="MAML", num_inner_steps=N, msl=False, **fixed),
        MethodConfig(name="MAML+MSL", num_inner_steps=N, msl=True, msl_epochs=10, **fixed),
        MethodConfig(name="MAML+LSLR", num_inner_steps=N, msl=False, granularity="layer_step",
                     **learned),
        MethodConfig(name="MAML++", num_inner_steps=N, msl=True, msl_epochs=10,
                     granularity="layer_step", **learned),
        # Meta-SGD style: one learned rate per parameter (and step), final-step loss.
        MethodConfig(name="Meta-SGD", num_inner_steps=N, msl=False, granularity="parameter",
                     **learned),
        # ... and with MSL: MAML++ with per-parameter instead of per-layer rates.
        MethodConfig(name="MAML++-param", num_inner_steps=N, msl=True, msl_epochs=10,
                     granularity="parameter", **learned),
    )


def get_config():
    base = SinusoidConfig(methods=(), iterations=70_000, iterations_per_epoch=1_000,
                          paper=sinusoid_paper.PAPER)
    return SinusoidGrid(base=base, methods=methods(), shots=(5, 10), seeds=(0, 1, 2),
                        smoke=dict(iterations=40, iterations_per_epoch=20, meta_batch_size=4,
                                   steps_per_call=20))
