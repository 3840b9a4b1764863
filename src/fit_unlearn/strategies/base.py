"""The Strategy protocol, the UpdatePlan it returns, and the strategy registry."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path

from fit_unlearn.data.documents import Document
from fit_unlearn.errors import ConfigError
from fit_unlearn.objectives import Objective, resolve_objective


@dataclass
class UpdatePlan:
    """What to do for one request.  ``text=None`` means: record, but make no update."""

    text: str | None
    objective: Objective  #: resolved (spec + typed config); the executor calls it as it is
    trainable: object = "all"  #: "all", list of layer indices, or list of parameter names
    qa: tuple = ()  #: QA pairs trained on together with the text
    receipt: dict = field(default_factory=dict)


class Strategy:
    """Base class and the whole contract the engine uses.  Subclasses implement ``plan``; stateful ones
    override the state hooks; strategies that must look at the stream first override the calibration hooks.

    The engine builds a strategy as ``cls(objective, trainable=..., include_qa=..., device=...)``, adding
    ``options=<the run configuration's strategy.<options_section>>`` for a strategy that declares an
    ``options_section`` (FIT: ``fit``).  ``objective`` is resolved (:class:`Objective`); a name is accepted
    for use from Python."""

    name = "base"
    #: the section of the ``strategy`` configuration that holds this strategy's typed options (None: none)
    options_section: str | None = None
    #: whether the engine's closed loop (stop at the non-member level, utility guard) is on when the run
    #: configuration sets ``loop.enabled: null``.  Off for every built-in strategy: FIT turns the loop on through
    #: ``config_defaults`` instead, an explicit ``true`` that its journal records (a journal written before
    #: session 21 with ``null`` meant off, for FIT too); ``loop.enabled: true`` switches it on for any strategy
    closed_loop: bool = False
    #: run-configuration settings this strategy uses when the configuration leaves them unset, as
    #: ``{section: {field: value}}`` (``engine.config.RunConfig`` applies them; a value given explicitly wins)
    config_defaults: dict[str, dict] = {}
    #: set by the engine when its updates are token-keyed edits (``update.trainable: rows``): only the request's
    #: own input-embedding rows move, so :meth:`plan` need not choose weights (FIT then attributes rows,
    #: :meth:`target_rows`, instead of layers); a request that falls back to a weight update gets them from
    #: :meth:`plan_weights`
    row_edits: bool = False

    def __init__(
        self,
        objective: Objective | str = "npo",
        *,
        trainable="all",
        include_qa: bool = True,
        device: str = "cpu",
    ):
        #: the objective used when the strategy does not choose one per request
        self.objective = resolve_objective(objective)
        self.trainable = trainable
        self.include_qa = include_qa
        self.device = device

    @property
    def objectives(self) -> list[Objective]:
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

    def target_rows(self, rows: list[int], examples: list, model, tok, least: int = 1) -> tuple[list[int], dict | None]:
        """Token-keyed edits: which of the request's own token ids (``rows``) the update edits, given the sequences
        it is unlearned on (``examples``), at least ``least`` of them; returns them and what the receipt records
        (None: nothing chosen)."""
        return rows, None

    def plan_weights(self, plan: UpdatePlan, model, tok) -> None:
        """Token-keyed edits that fall back to a weight update (too few own tokens, ``rows.fallback: full``): fill in
        the plan's ``trainable`` weights that :meth:`plan` left out (FIT: its layer attribution)."""

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
