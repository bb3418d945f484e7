"""Sinusoid smoke run for tests: seconds on a CPU; numbers are meaningless.

Run:      python -m experiments.sinusoid --config experiments/configs/sinusoid_smoke.py
Runtime:  under a minute on a 2-core CPU (mostly compilation).
Paper:    see sinusoid_paper.py.
"""

import dataclasses

from experiments.configs import sinusoid_paper


def get_config():
    cfg = sinusoid_paper.get_config()
    methods = tuple(dataclasses.replace(m, num_inner_steps=min(m.num_inner_steps, 2),
                                        msl_epochs=1) for m in cfg.methods)
    return dataclasses.replace(cfg, methods=methods, iterations=40, iterations_per_epoch=20,
                               meta_batch_size=4, num_eval_tasks=20, eval_query_points=10,
                               eval_steps=(0, 1, 3), steps_per_call=20)
