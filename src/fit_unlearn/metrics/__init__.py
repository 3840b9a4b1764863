"""Forgetting and utility metrics: probability, ROUGE-L, token accuracy, composite score, Forget Degree /
Retain Utility against per-document gold references, membership inference and extraction strength."""

from fit_unlearn.metrics.reference import ReferencePoints, closeness, reference_at, retain_utility
from fit_unlearn.metrics.scores import SplitScores, composite, evaluate_split

__all__ = [
    "ReferencePoints",
    "SplitScores",
    "composite",
    "evaluate_split",
    "closeness",
    "reference_at",
    "retain_utility",
]
