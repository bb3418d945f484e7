"""Experiment scripts for maml_jax: Omniglot / mini-ImageNet MAML and MAML++, sinusoids.

Entry points (run from the repository root):

* ``python -m experiments.train --config=experiments/configs/<name>.py[:smoke]
  [--config.KEY=VALUE ...] [--workdir=DIR]`` (``train_and_evaluate`` in Python)
* ``python -m experiments.evaluate --workdir=DIR``
* ``python -m experiments.compare DIR1 DIR2 [--out=FILE.png]``
* ``python -m experiments.sinusoid``, ``experiments.study_grid``, ``experiments.study``

Modules by concern: ``config_lib`` (the config keys, presets and checks), ``flag_parsing``
(absl flags and ``--config`` files), ``datasets``, ``wiring`` (config to library
arguments), ``evaluation``, ``checkpoints``, ``metrics_log``. Only this package reads the
config files; the library receives explicit arguments.
"""
