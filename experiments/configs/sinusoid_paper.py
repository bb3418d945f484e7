"""Sinusoid regression at the MAML paper's scale: MAML vs MAML++ (no data download).

MAML as Finn et al. 2017 (1 inner step at alpha 0.01, K = 10 in training, meta-batch 25,
Adam 1e-3, 70,000 iterations). MAML++ on the same budget is this repository's recipe (the
MAML++ paper has no sinusoid experiment): 10 trained inner steps, learned per-layer per-step
rates with a 10x smaller meta learning rate, MSL over the first 10 epochs, cosine annealing.

Run:      python -m experiments.sinusoid --config=experiments/configs/sinusoid_paper.py
          (``--config.num_epochs=N`` and the other shared keys override every method,
          ``--config.methods['MAML++'].KEY=VALUE`` one method; ``--iterations=N`` is
          ``N // iterations_per_epoch`` epochs)
Variants: ``:demo`` (fewer iterations; ``make demo``, also ``sinusoid_demo.py``) and
          ``:smoke`` (seconds on a CPU, for tests; its numbers mean nothing):
          python -m experiments.sinusoid --config=experiments/configs/sinusoid_paper.py:smoke
Expected runtime (estimate): about 10 minutes on a 2-core CPU (70 epochs of 1,000 outer
          steps per method; MAML++ with 10 inner steps costs most); ``:demo`` about 3.
Paper:    MAML, 5-shot test MSE 0.67 / 0.38 / 0.35 after 1 / 5 / 10 steps (Finn et al.,
          read off their Fig. 2 / text). Measured results: docs/results.md.
"""

from experiments.config_lib import comparison_config, select_variant, sinusoid_config

PAPER = "MAML paper (5-shot, full scale): 0.67 / 0.38 / 0.35 after 1 / 5 / 10 steps."


def methods():
    """``{name: the keys in which the method differs from sinusoid_config}``."""
    return {
        "MAML": {},   # sinusoid_config is Finn et al.'s MAML: 1 step at a fixed alpha 0.01
        # MAML++ learns one rate per layer and step, so it is trained with all 10 steps it is
        # evaluated with (a learned schedule extrapolated past its last step diverged here).
        # rate_update "reference_0.1x": the rates start at 0.01, far below the weights'
        # scale, and plain Adam at 1e-3 moved them fast enough to blow up the inner loop (a
        # 70k run stopped at iteration ~2,000 with a non-finite loss); their meta learning
        # rate is 1e-4.
        "MAML++": dict(num_inner_steps=10, lr_granularity="layer_step", learn_inner_lrs=True,
                       msl=True, msl_epochs=10, lr_schedule="cosine",
                       rate_update="reference_0.1x"),
    }


# The variants' shared settings: demo 40 epochs of 500 (20,000 iterations); smoke seconds.
VARIANTS = {
    "demo": dict(num_epochs=40, iterations_per_epoch=500),
    "smoke": dict(num_epochs=2, iterations_per_epoch=20, meta_batch_size=4, num_test_tasks=20,
                  q_query_eval=10, num_inner_steps_eval=3, sinusoid_eval_steps=(0, 1, 3),
                  steps_per_call=20, msl_epochs=1),
}


def _smoke_methods():
    """At most 2 inner steps and MSL over 1 epoch for every method."""
    return {name: {**m, "num_inner_steps": min(m.get("num_inner_steps", 1), 2), "msl_epochs": 1}
            for name, m in methods().items()}


def get_config(arg=None):
    """The paper-scale comparison, or the variant ``arg``: "demo" or "smoke"."""
    shared = select_variant(sinusoid_config(name="sinusoid_paper"), arg, VARIANTS)
    note = PAPER + (" This demo is scaled down." if arg == "demo" else "")
    return comparison_config(shared, _smoke_methods() if arg == "smoke" else methods(),
                             paper_note=note)
