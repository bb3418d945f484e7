"""Experiment scripts for maml_jax: Omniglot MAML / MAML++ training and evaluation.

Entry points (run from the repository root):

* ``python -m experiments.train --config experiments/configs/<name>.py [--workdir DIR]``
* ``python -m experiments.evaluate --workdir DIR``
* ``python -m experiments.compare DIR1 DIR2 [--out FILE.png]``

Only this package reads the config files; the library receives explicit arguments.
"""
