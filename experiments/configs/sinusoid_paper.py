"""Sinusoid regression at the MAML paper's scale: MAML vs MAML++.

Run:      python -m experiments.sinusoid --config=experiments/configs/sinusoid_paper.py
          (``--config.iterations=N`` and the other top-level keys override the config)
Variants: ``:demo`` (20,000 iterations, ``make demo``; also ``sinusoid_demo.py``) and
          ``:smoke`` (seconds on a CPU, for tests; numbers are meaningless):
          python -m experiments.sinusoid --config=experiments/configs/sinusoid_paper.py:smoke
Runtime:  see README (measured on a 2-core CPU); a GPU is not needed for a 40-unit MLP.
          The smoke variant: under a minute on a 2-core CPU (mostly compilation).
Paper:    MAML (Finn et al. 2017), K=10 meta-training, 1 inner step at alpha=0.01,
          meta-batch 25, Adam 1e-3, 70,000 iterations; reported 5-shot test MSE
          0.67 / 0.38 / 0.35 after 1 / 5 / 10 steps (read off their Fig. 2 / text).
MAML++ here: the same budget with 10 inner steps, learned per-layer per-step alphas (LSLR)
with a 10x smaller meta learning rate than the weights (see below), the annealed
multi-step loss over the first 10 epochs, and cosine meta-lr annealing.
"""

from experiments.config_lib import ConfigError
from experiments.sinusoid import method_config, sinusoid_config

PAPER = "MAML paper (5-shot, full scale): 0.67 / 0.38 / 0.35 after 1 / 5 / 10 steps."


def methods():
    return (
        method_config(name="MAML", num_inner_steps=1, inner_lr=0.01, granularity="scalar",
                     learn_inner_lrs=False, msl=False),
        # MAML++ learns one rate per layer and step, so it is trained with all 10 steps it is
        # evaluated with (a learned schedule extrapolated past its last step diverged here).
        # inner_lr_scale: the rates start at 0.01, far below the weights' scale, and plain
        # Adam at 1e-3 moved them fast enough to blow up the inner loop (a 70k run stopped
        # at iteration ~2,000 with a non-finite loss); their meta learning rate is 1e-4.
        method_config(name="MAML++", num_inner_steps=10, inner_lr=0.01,
                     granularity="layer_step", learn_inner_lrs=True, msl=True, msl_epochs=10,
                     cosine=True, inner_lr_scale=0.1),
    )


def _smoke_method(m):
    return method_config(**{**m.to_dict(), "num_inner_steps": min(m.num_inner_steps, 2),
                            "msl_epochs": 1})


def get_config(arg=None):
    """The paper-scale config, or the variant ``arg``: "demo" or "smoke"."""
    if arg in (None, ""):
        return sinusoid_config(methods(), iterations=70_000, iterations_per_epoch=1_000,
                               paper=PAPER)
    if arg == "demo":
        return sinusoid_config(methods(), iterations=20_000, iterations_per_epoch=500,
                               paper=PAPER + " This demo is scaled down.")
    if arg == "smoke":
        return sinusoid_config(tuple(_smoke_method(m) for m in methods()), iterations=40,
                               iterations_per_epoch=20, meta_batch_size=4, num_eval_tasks=20,
                               eval_query_points=10, eval_steps=(0, 1, 3), steps_per_call=20,
                               paper=PAPER)
    raise ConfigError(f"unknown config variant {arg!r}; this config has ['demo', 'smoke']")
