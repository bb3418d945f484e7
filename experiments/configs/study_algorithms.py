"""The MAML family on one protocol: MAML, first-order MAML, MAML++, Meta-SGD, ANIL, BOIL,
Reptile and iMAML, with the same budget, tasks and seeds.

Sinusoid regression at K = 5 and K = 10 support (and query) points, 3 seeds each, every
method on a **reduced budget** of 20,000 outer steps (the MAML paper's sinusoid used
70,000), meta-batch 25, Adam 1e-3, 5 inner steps at the MAML paper's fixed alpha 0.01 (the
learned-rate methods start there), tested on the same 600 tasks after 5 and 10 steps. The
settings of each method are its published defaults where one applies to this problem and
otherwise untuned: Meta-SGD with 5 steps like every method (published: 1; its cells are
the learned-rates grid's ``Meta-SGD-5``, and reproduce its numbers bit for bit), Reptile
with inner SGD (its paper's Adam inner loop is ``{"name": "reptile", "inner_optimizer":
"adam"}``), iMAML with lambda 2 and 5 CG iterations (five plain gradient steps do not
solve its proximal problem here: see the results page). Reduced scale: not comparable
with any paper's numbers.

Run:      python -m experiments.study_grid --grid experiments/configs/study_algorithms.py \\
              --root runs/study_algorithms
          (resumable; ``--smoke`` for a seconds-long CPU check)
Paper:    none at this scale. For orientation only, at their papers' scales: MAML (Finn et
          al. 2017) 5-shot sinusoid MSE 0.35 after 10 steps (70,000 iterations).
"""

from experiments.config_lib import sinusoid_config
from experiments.study_grid import StudyGrid

N = 5
BUDGET = dict(num_epochs=40, iterations_per_epoch=500)
FIXED = dict(lr_granularity="scalar", learn_inner_lrs=False, msl=False)
SMOKE = dict(num_epochs=2, iterations_per_epoch=20, meta_batch_size=4, steps_per_call=20,
             msl_epochs=1)


def methods():
    """``{name: the keys in which the method differs from sinusoid_config}``."""
    return {
        "MAML": dict(**FIXED),
        "FOMAML": dict(first_order=True, **FIXED),
        # This repository's sinusoid MAML++ recipe (study_learned_rates.py).
        "MAML++": dict(msl=True, msl_epochs=4, lr_granularity="layer_step",
                       learn_inner_lrs=True, rate_update="reference_0.1x"),
        "Meta-SGD": dict(msl=False, lr_granularity="meta_sgd", learn_inner_lrs=True,
                         rate_update="auto", inner_grad_clip="auto"),
        "ANIL": dict(inner_loop="head", **FIXED),
        "BOIL": dict(inner_loop="body", **FIXED),
        "Reptile": dict(algorithm={"name": "reptile"}, **FIXED),
        "iMAML": dict(algorithm={"name": "imaml", "lam": 2.0, "cg_iterations": 5}, **FIXED),
    }


def get_config():
    """Cells ``<method>_K<k>_s<seed>``: K support (and query) points in training and test."""
    configs = {f"{name}_K{k}": sinusoid_config(name=name, k_shot=k, q_query=k,
                                               num_inner_steps=N, sinusoid_eval_shots=(k,),
                                               **BUDGET, **updates)
               for k in (5, 10) for name, updates in methods().items()}
    return StudyGrid(configs=configs, seeds=(0, 1, 2), smoke=SMOKE)
