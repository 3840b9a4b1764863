"""The FIT strategy: F (filter) -> T (layers) -> I (objective) per request; each part can be switched off
(``filter: false``, ``layers: false``, ``importance: false``) to measure its contribution."""

from __future__ import annotations

import json
import time
from pathlib import Path

from fit_unlearn.data.documents import Document
from fit_unlearn.errors import ConfigError
from fit_unlearn.objectives import get_objective
from fit_unlearn.strategies.base import UpdatePlan, register_strategy
from fit_unlearn.strategies.fit.filter import FilterConfig, RedundancyFilter
from fit_unlearn.strategies.fit.importance import ImportanceConfig, ImportanceSelector
from fit_unlearn.strategies.fit.layers import LayerAttribution, LayerConfig
from fit_unlearn.strategies.sequential import SequentialStrategy


def _section(value, cls, name):
    if value is False or value is None:
        return None
    if value is True:
        return cls()
    if not isinstance(value, dict):
        raise ConfigError(f"strategy.fit.{name} must be true, false or a mapping of options")
    try:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in value.items()})
    except TypeError as e:
        raise ConfigError(f"strategy.fit.{name}: {e}") from None


@register_strategy("fit")
class FitStrategy(SequentialStrategy):
    """FIT.  ``objective`` is the fixed objective used when importance selection is switched off."""

    def __init__(
        self,
        objective: str = "npo",
        objective_params: dict | None = None,
        trainable="all",
        include_qa: bool = True,
        filter=True,
        layers=True,
        importance=True,  # noqa: A002
        device: str = "cpu",
        **unknown,
    ):
        if unknown:
            raise ConfigError(
                f"strategy.fit: unknown option(s) {', '.join(sorted(unknown))}; allowed: filter, layers, importance"
            )
        super().__init__(objective, objective_params, trainable, include_qa, device)
        fcfg = _section(filter, FilterConfig, "filter")
        lcfg = _section(layers, LayerConfig, "layers")
        icfg = _section(importance, ImportanceConfig, "importance")
        self.filter = RedundancyFilter(fcfg, device) if fcfg else None
        self.layers = LayerAttribution(lcfg) if lcfg else None
        self.importance = ImportanceSelector(icfg) if icfg else None
        if self.importance:
            for o in icfg.objectives:
                get_objective(o).make_config(icfg.objective_params.get(o))

    @property
    def objectives(self) -> list[str]:
        return list(self.importance.cfg.objectives) if self.importance else [self.objective]

    @property
    def needs_calibration(self) -> bool:
        return (self.importance is not None and not self.importance.calibrated) or (
            self.layers is not None and self.layers.needs_calibration
        )

    @property
    def calibration_size(self) -> int:
        """Stream requests needed by ``calibrate`` (0 when the importance thresholds are already set)."""
        return self.importance.cfg.calibration_size if self.importance and not self.importance.calibrated else 0

    def calibrate(self, texts: list[str], model, tok, retain_texts: list[str] = ()) -> dict:
        """Before the stream: importance thresholds from ``texts`` (the first requests) and, with
        ``layers.relative``, the per-layer retain profile from ``retain_texts``."""
        info: dict = {}
        if self.importance is not None and not self.importance.calibrated:
            info.update(self.importance.calibrate(texts, model, tok))
        if self.layers is not None and self.layers.needs_calibration:
            info.update(self.layers.calibrate(list(retain_texts), model, tok))
        return info

    def plan(self, request: Document, model, tok) -> UpdatePlan:
        receipt: dict = {"strategy": "fit", "seconds": {}}
        text = request.text
        t = time.perf_counter()
        if self.filter is not None:
            text, receipt["filter"] = self.filter.filter(text, model, tok)
        receipt["seconds"]["filter"] = time.perf_counter() - t
        if not text.strip():
            receipt["fully_redundant"] = True
            return UpdatePlan(text=None, objective=self.objective, receipt=receipt)
        t = time.perf_counter()
        trainable = self.trainable
        if self.layers is not None:
            trainable, receipt["layers"] = self.layers.select(text, model, tok)
        receipt["seconds"]["attribution"] = time.perf_counter() - t
        t = time.perf_counter()
        objective, params = self.objective, self.objective_params
        if self.importance is not None:
            objective, receipt["importance"] = self.importance.choose(text, model, tok)
            params = self.importance.params(objective)
        receipt["seconds"]["importance"] = time.perf_counter() - t
        receipt["objective"] = objective
        return UpdatePlan(
            text=text,
            objective=objective,
            objective_params=params,
            trainable=trainable,
            qa=request.qa if self.include_qa else (),
            receipt=receipt,
        )

    def after_update(self, request, plan, model, tok) -> None:
        if self.filter is not None:
            self.filter.commit()

    def save_state(self, directory: Path) -> None:
        if self.filter is not None:
            self.filter.save(directory)
        if self.importance is not None:
            (directory / "importance.json").write_text(json.dumps(self.importance.state()))
        if self.layers is not None and self.layers.profile is not None:
            (directory / "layer_profile.json").write_text(json.dumps(self.layers.profile))

    def load_state(self, directory: Path) -> None:
        if self.filter is not None:
            self.filter.load(directory)
        if self.importance is not None and (directory / "importance.json").exists():
            self.importance.load(json.loads((directory / "importance.json").read_text()))
        if self.layers is not None and (directory / "layer_profile.json").exists():
            self.layers.profile = json.loads((directory / "layer_profile.json").read_text())
