"""Sinusoid MAML vs MAML++, scaled down to a few minutes on a 2-core CPU (``make demo``).

Run:      make demo    (= python -m experiments.sinusoid
          --config=experiments/configs/sinusoid_demo.py, the same config as
          ``--config=experiments/configs/sinusoid_paper.py:demo``)
Paper:    the full-scale config is sinusoid_paper.py (MAML paper: 5-shot MSE 0.67 / 0.38 /
          0.35 after 1 / 5 / 10 steps); this one trains for fewer iterations with the same
          settings, so expect somewhat higher errors. The run prints its own table.
"""

from experiments.configs import sinusoid_paper


def get_config(arg=None):
    """``sinusoid_paper.py:demo`` (this file keeps ``make demo``'s command as it was)."""
    return sinusoid_paper.get_config("demo" if arg in (None, "") else arg)
