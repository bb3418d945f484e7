"""The MAML family on one protocol, Omniglot 5-way 1-shot at a 2-core CPU's scale.

**REDUCED SCALE**, not comparable with any paper's numbers: Conv4 with 16 filters (papers:
64), 600 meta-iterations (3 epochs of 200; MAML++: 50,000), meta-batch 8, 5 inner steps,
shared batch norm, one best checkpoint chosen on 100 validation tasks, tested on 600 tasks,
3 seeds per method. Every method is MAML's settings (``MAML_OFF`` of the ablation: scalar
fixed alpha 0.1, final-step loss, constant Adam 1e-3) changed only where the method differs,
so budget, tasks and seeds are the same for all: first order (FOMAML); the repository's
MAML++ (its epochs scaled: MSL over 1, cosine over 3); Meta-SGD (per-weight rates; 5
inner steps like every method, published: 1); ANIL (inner loop on the head); BOIL (on the
body); Reptile (inner SGD); iMAML (lambda 2, 5 CG iterations; the paper solves the inner
problem with more steps).

Run (resumable, one cell at a time):
    python -m experiments.study_grid --grid experiments/configs/study_algorithms_omniglot.py \\
        --root runs/study_algorithms_omniglot --data-dir ../shared/data/omniglot
CPU smoke: add ``--smoke`` (synthetic glyphs, seconds per cell).

Paper: none at this scale (``paper_test_accuracy`` is None). For orientation only, at their
papers' full scales (check each against its paper before quoting): MAML++ 5w1s 99.47;
Reptile 97.68 +- 0.04 (transductive); iMAML 99.50 +- 0.26.
"""

from experiments.config_lib import mamlpp_config
from experiments.configs import study_omniglot_ablation as ablation
from experiments.study_grid import StudyGrid

CPU_SCALE = dict(num_filters=16, num_epochs=3, iterations_per_epoch=200, msl_epochs=1,
                 num_val_tasks=100, num_test_tasks=600, keep_best=1, ensemble_size=1,
                 eval_batch_size=20, steps_per_call=50)
PER_WEIGHT = dict(learn_inner_lrs=True, rate_update="auto", inner_grad_clip="auto")


def methods() -> dict[str, dict | None]:
    """``{name: the keys in which the method differs from MAML}``; None: MAML++ as it is."""
    return {
        "MAML": {},
        "FOMAML": dict(first_order=True),
        "MAML++": None,
        "Meta-SGD": dict(lr_granularity="meta_sgd", **PER_WEIGHT),
        "ANIL": dict(inner_loop="head"),
        "BOIL": dict(inner_loop="body"),
        "Reptile": dict(algorithm={"name": "reptile"}),
        "iMAML": dict(algorithm={"name": "imaml", "lam": 2.0, "cg_iterations": 5}),
    }


def get_config():
    configs = {}
    for name, changes in methods().items():
        updates = {} if changes is None else {**ablation.MAML_OFF, **changes}
        cfg = mamlpp_config(5, 1, **{**updates, **CPU_SCALE})
        cfg["name"] = f"{name}_5w1s"
        cfg["paper_test_accuracy"] = None  # a reduced run never stands next to a paper number
        configs[cfg["name"]] = cfg
    return StudyGrid(configs=configs, seeds=(0, 1, 2), smoke=ablation.SMOKE)
