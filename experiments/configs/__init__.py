"""One config file per experiment; each defines ``get_config(arg=None)`` returning an
``ml_collections.ConfigDict`` (``arg``: a variant such as ``smoke``, from ``FILE.py:smoke``).

The study grids (``study_*.py``) return ``experiments.study_grid`` grids instead.
"""
