"""Meta-learning algorithms: one module each, all implementing ``base.Algorithm``.

``MetaConfig(algorithm=...)`` selects one; ``ALGORITHMS`` is where each is registered (the
one line a new algorithm adds besides its module, its test file and its config).
"""

from maml_jax.algorithms.base import Algorithm
from maml_jax.algorithms.imaml import IMAML
from maml_jax.algorithms.maml import MAML, MAMLPhase
from maml_jax.algorithms.reptile import Reptile

#: Every algorithm by name: ``ALGORITHMS[name](**its settings)``.
ALGORITHMS = {
    "maml": MAML,
    "reptile": Reptile,
    "imaml": IMAML,
}

__all__ = ["ALGORITHMS", "Algorithm", "IMAML", "MAML", "MAMLPhase", "Reptile", "make_algorithm"]


def make_algorithm(name: str, **settings) -> Algorithm:
    """The registered algorithm ``name`` with its settings.

    Raises:
      ValueError: for a name that is not registered, listing those that are.

    Example:
      >>> make_algorithm("reptile", inner_optimizer="adam")
      Reptile(inner_optimizer='adam', adam_b1=0.0, adam_b2=0.999, adam_eps=1e-08)
    """
    if name not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r}; registered: {sorted(ALGORITHMS)}")
    return ALGORITHMS[name](**settings)
