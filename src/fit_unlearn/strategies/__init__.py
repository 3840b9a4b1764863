"""Strategies decide, per deletion request, what to train on, which parameters and with which objective."""

from fit_unlearn.strategies.base import STRATEGIES, Strategy, UpdatePlan, get_strategy, register_strategy

__all__ = ["STRATEGIES", "Strategy", "UpdatePlan", "get_strategy", "register_strategy"]
