"""Forgetting and utility metrics: probability, ROUGE-L, token accuracy, composite score, Forget Degree /
Retain Utility against the interpolated gold reference, membership inference and extraction strength."""

from fit_unlearn.metrics.reference import ReferencePoints, forget_degree, reference_at, retain_utility
from fit_unlearn.metrics.scores import SplitScores, composite, evaluate_split

__all__ = [
    "ReferencePoints",
    "SplitScores",
    "composite",
    "evaluate_split",
    "forget_degree",
    "reference_at",
    "retain_utility",
]
