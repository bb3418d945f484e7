"""Experiment scripts for maml_jax: Omniglot / mini-ImageNet MAML and MAML++, sinusoids.

Entry points (run from the repository root):

* ``python -m experiments.train --config=experiments/configs/<name>.py[:smoke]
  [--config.KEY=VALUE ...] [--workdir=DIR]`` (``train_and_evaluate`` in Python)
* ``python -m experiments.evaluate --workdir=DIR``
* ``python -m experiments.compare DIR1 DIR2 [--out=FILE.png]``
* ``python -m experiments.sinusoid``, ``experiments.study_grid``, ``experiments.study``

Modules by concern: ``config_lib`` (the config keys, presets, comparisons and checks),
``flag_parsing`` (absl flags, ``--config`` files, exit statuses), ``datasets``, ``wiring``
(config to library arguments), ``training_loop`` (the host loop every trainer runs),
``task_metrics`` (metrics on fixed tasks, validation), ``checkpoints``, ``trained_workdir``
(opening a trained run for evaluation), ``metrics_log``, ``plots``; the study:
``study_grid`` (grids of cells), ``study_runs`` (evaluating them), ``study_statistics``,
``study_report`` (table and plots), ``study`` (the command). Only this package reads the
config files; the library receives explicit arguments.
"""
