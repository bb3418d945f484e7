"""Tiny experiment configs (synthetic glyphs, a 4-filter Conv4) and what their runs leave
on disk, for the tests of ``experiments/`` (``tests/experiments/``)."""

from __future__ import annotations

import json
import pathlib

from experiments import config_lib

# Derivative-order annealing over the first epoch: the tiny runs go through a first-order
# and a second-order step, and their records show which one ran when.
TINY = dict(name="tiny", data="synthetic", synthetic_num_classes=30,
            synthetic_counts=(20, 5, 5), num_filters=4, num_inner_steps=2,
            num_inner_steps_eval=2, meta_batch_size=2, num_epochs=3, iterations_per_epoch=2,
            steps_per_call=2, num_val_tasks=8, num_test_tasks=8, keep_best=1, ensemble_size=2,
            first_order_epochs=1)


def tiny_config(**updates):
    return config_lib.validate_config(config_lib.mamlpp_config(5, 1, **{**TINY, **updates}))


def records(workdir, kind):
    lines = (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


# The base of the config-key table (test_config_keys.py) and of test_wiring.py's configs.
WIRING_BASE = dict(name="wiring", data="synthetic", synthetic_num_classes=30,
                   synthetic_counts=(20, 5, 5), num_filters=4, num_inner_steps=2,
                   num_inner_steps_eval=2, meta_batch_size=2, num_epochs=3,
                   iterations_per_epoch=2, steps_per_call=2, num_val_tasks=4, num_test_tasks=4,
                   keep_best=2, ensemble_size=2)


def wiring_config(updates: dict) -> dict:
    updates = {**WIRING_BASE, **updates}
    ways, shots = updates.pop("num_ways", 5), updates.pop("k_shot", 1)
    return config_lib.validate_config(config_lib.mamlpp_config(ways, shots, **updates))
