"""The Strategy protocol, the UpdatePlan it returns, and the strategy registry."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path

from fit_unlearn.data.documents import Document
from fit_unlearn.errors import ConfigError


@dataclass
class UpdatePlan:
    """What to do for one request.  ``text=None`` means: record, but make no update."""

    text: str | None
    objective: str
    objective_params: dict = field(default_factory=dict)
    trainable: object = "all"  #: "all", list of layer indices, or list of parameter names
    qa: tuple = ()  #: QA pairs trained on together with the text
    receipt: dict = field(default_factory=dict)


class Strategy:
    """Base class and the whole contract the engine uses.  Subclasses implement ``plan``; stateful ones
    override the state hooks; strategies that must look at the stream first override the calibration hooks.

    A strategy is built as ``cls(objective=..., objective_params=..., trainable=..., include_qa=...,
    device=..., **options)`` where ``options`` is the ``strategy.fit`` section of the run configuration."""

    name = "base"
    #: the objective used when the strategy does not choose one per request
    objective: str = "npo"

    @property
    def objectives(self) -> list[str]:
        """Every objective this strategy may plan (the engine loads a frozen reference if one needs it)."""
        return [self.objective]

    @property
    def needs_calibration(self) -> bool:
        """True until ``calibrate`` has run (checked before the first request)."""
        return False

    @property
    def calibration_size(self) -> int:
        """How many stream requests ``calibrate`` wants to see (0: none)."""
        return 0

    def calibrate(self, texts: list[str], model, tok, retain_texts: list[str] = ()) -> dict:
        """Look at the first requests' ``texts`` and retain-train ``retain_texts`` before the stream; the
        returned summary is journaled."""
        return {}

    def plan(self, request: Document, model, tok) -> UpdatePlan:
        raise NotImplementedError

    def after_update(self, request: Document, plan: UpdatePlan, model, tok) -> None:
        """Called once the update of ``request`` is applied (FIT adds kept chunks to its memory)."""

    def save_state(self, directory: Path) -> None:
        """Write whatever is needed to continue exactly (e.g. a vector index) into ``directory``."""

    def load_state(self, directory: Path) -> None:
        """Restore what ``save_state`` wrote."""


STRATEGIES: dict[str, type] = {}


def register_strategy(name: str):
    def deco(cls):
        STRATEGIES[name] = cls
        cls.name = name
        return cls

    return deco


def get_strategy(name: str) -> type:
    if name in STRATEGIES:
        return STRATEGIES[name]
    close = difflib.get_close_matches(name, STRATEGIES, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ConfigError(f"unknown strategy {name!r}{hint}; known strategies: {', '.join(sorted(STRATEGIES))}")
