"""The continual engine: request streams, crash-safe journal, atomic checkpoints, evaluation hooks."""

from fit_unlearn.engine.config import RunConfig, load_config
from fit_unlearn.engine.journal import Journal
from fit_unlearn.engine.runner import Engine

__all__ = ["Engine", "Journal", "RunConfig", "load_config"]
