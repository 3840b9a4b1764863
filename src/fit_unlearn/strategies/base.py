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
    """Base class: subclasses implement ``plan``; stateful ones override the state hooks."""

    name = "base"

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
