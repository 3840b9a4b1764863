"""Unlearning objectives: pure loss functions of model outputs, with one typed config each.

Import this package to register all built-in objectives; look them up with :func:`get_objective`.
"""

from fit_unlearn.objectives import ascent, distribution, npo, preference, rmu  # noqa: F401  (registration)
from fit_unlearn.objectives.base import Outputs, UnlearnBatch
from fit_unlearn.objectives.registry import (
    OBJECTIVES,
    Objective,
    ObjectiveSpec,
    get_objective,
    register_objective,
    resolve_objective,
)

__all__ = [
    "OBJECTIVES",
    "Objective",
    "ObjectiveSpec",
    "Outputs",
    "UnlearnBatch",
    "get_objective",
    "register_objective",
    "resolve_objective",
]
