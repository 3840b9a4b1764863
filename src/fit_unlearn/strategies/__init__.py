"""Strategies decide, per deletion request, what to train on, which parameters and with which objective.

Importing this package registers the built-in strategies (``sequential``, ``fit``); look them up with
:func:`get_strategy`.
"""

from fit_unlearn.strategies import fit, sequential  # noqa: F401  (registration)
from fit_unlearn.strategies.base import STRATEGIES, Strategy, UpdatePlan, get_strategy, register_strategy

__all__ = ["STRATEGIES", "Strategy", "UpdatePlan", "get_strategy", "register_strategy"]
