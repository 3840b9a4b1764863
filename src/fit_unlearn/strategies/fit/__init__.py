"""FIT: redundancy Filtering, Importance-aware objective selection, Targeted layer attribution."""

from fit_unlearn.strategies.fit.attribution import LayerAttribution
from fit_unlearn.strategies.fit.filter import RedundancyFilter
from fit_unlearn.strategies.fit.importance import ImportanceSelector
from fit_unlearn.strategies.fit.strategy import FitStrategy

__all__ = ["FitStrategy", "ImportanceSelector", "LayerAttribution", "RedundancyFilter"]
