"""The FIT strategy: F (filter) -> T (layers) -> I (objective) per request; each part can be switched off
(``filter: false``, ``layers: false``, ``importance: false``) to measure its contribution."""

from __future__ import annotations

import json
import time
from pathlib import Path

from pydantic import ValidationError

from fit_unlearn.data.documents import Document
from fit_unlearn.errors import ConfigError
from fit_unlearn.objectives import Objective, resolve_objective
from fit_unlearn.schema import format_validation_error
from fit_unlearn.strategies.base import UpdatePlan, register_strategy
from fit_unlearn.strategies.fit.attribution import LayerAttribution, row_scores
from fit_unlearn.strategies.fit.config import FitOptions
from fit_unlearn.strategies.fit.filter import RedundancyFilter
from fit_unlearn.strategies.fit.importance import ImportanceSelector
from fit_unlearn.strategies.sequential import SequentialStrategy


@register_strategy("fit")
class FitStrategy(SequentialStrategy):
    """FIT.  ``objective`` is the fixed objective used when importance selection is switched off."""

    options_section = "fit"
    #: FIT's defaults: each request is unlearned by token-keyed edits (the input-embedding rows of the tokens that
    #: are its own, docs/rows.md) under the closed loop, checked every second step, on its facts (the template
    #: every document shares left out); the filter cuts the request into token chunks (character chunks cut words,
    #: and the pieces became "own" tokens that no document holds); the stop measures each token's loss capped at the
    #: holdout's 0.7 quantile, so a few tokens driven far cannot carry a request to its target (session 22); the checks
    #: are spaced by the loss's progress (session 23); a document already deleted no longer holds the rare words it
    #: shares with a later request (``rows.reuse_forgotten``, session 25: three stream orders on two data sets); a
    #: question read only in words other documents share gets its rarest word edited too (``rows.cover_prompts``,
    #: session 28: three stream orders of synthetic 60 and real PCH 60, order 0 of synthetic 120); each request
    #: stops at the level of the 3 holdout documents most like it (``loop.neighbours``, session 32: three stream
    #: orders of real PCH 60 and synthetic 60, synthetic 120, the book passages).  The
    #: paper's recipe (every weight of T's layers, 3 epochs at 3e-5, no loop, character chunks) is
    #: ``examples/fit-paper.yaml``; measured against it in benchmarks/README.md, "Session 21" and "Session 22"
    config_defaults = {
        "strategy": {"fit": {"rows_objective": "ga", "filter": {"unit": "tokens"}}},
        "update": {
            "trainable": "rows",
            "template_max_df": 0.2,
            "rows": {"reuse_forgotten": True, "cover_prompts": True},
        },
        "loop": {"enabled": True, "check_every": 2, "cap_quantile": 0.7, "check_ahead": 0.5, "neighbours": 3},
    }

    def __init__(
        self,
        objective: Objective | str = "npo",
        *,
        trainable="all",
        include_qa: bool = True,
        device: str = "cpu",
        options: FitOptions | dict | None = None,
    ):
        super().__init__(objective, trainable=trainable, include_qa=include_qa, device=device)
        if not isinstance(options, FitOptions):  # from Python: a mapping is validated like the YAML section
            try:
                options = FitOptions.model_validate(options or {})
            except ValidationError as e:
                raise ConfigError(format_validation_error(e, "strategy.fit")) from None
        self.options = options
        self.filter = RedundancyFilter(options.filter, device) if options.filter else None
        self.layers = LayerAttribution(options.layers) if options.layers else None
        self.importance = ImportanceSelector(options.importance) if options.importance else None
        #: the objective of every row edit (``rows_objective``; None: I's choice, as for a weight update)
        self.rows_objective = resolve_objective(options.rows_objective) if options.rows_objective else None

    @property
    def objectives(self) -> list[Objective]:
        """Every objective a request may get (a row edit's, and those of a weight update, a fallback's)."""
        weights = (
            [self.objective]
            if self.importance is None
            else [self.importance.cfg.objective(o) for o in self.importance.cfg.objectives]
        )
        return ([self.rows_objective] if self._fixed_row_objective else []) + weights

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
        if self.layers is not None and not self.row_edits:  # row edits: T attributes rows (target_rows)
            trainable, receipt["layers"] = self.layers.select(text, model, tok)
        receipt["seconds"]["attribution"] = time.perf_counter() - t
        t = time.perf_counter()
        objective = self.objective
        if self._fixed_row_objective:  # I chooses only for a fallback (plan_weights)
            objective = self.rows_objective
        elif self.importance is not None:
            objective, receipt["importance"] = self.importance.choose(text, model, tok)
        receipt["seconds"]["importance"] = time.perf_counter() - t
        receipt["objective"] = objective.name
        return UpdatePlan(
            text=text,
            objective=objective,
            trainable=trainable,
            qa=request.qa if self.include_qa else (),
            receipt=receipt,
        )

    @property
    def _fixed_row_objective(self) -> bool:
        """Whether a row edit takes ``rows_objective`` instead of I's choice."""
        return self.row_edits and self.rows_objective is not None

    def plan_weights(self, plan: UpdatePlan, model, tok) -> None:
        """T's layer attribution, and I's objective, for a request that falls back from a row edit to a weight
        update."""
        if plan.text is None:
            return
        if self.layers is not None:
            t = time.perf_counter()
            plan.trainable, plan.receipt["layers"] = self.layers.select(plan.text, model, tok)
            plan.receipt["seconds"]["attribution"] = time.perf_counter() - t
        if self.importance is not None and self.rows_objective is not None:
            t = time.perf_counter()
            plan.objective, plan.receipt["importance"] = self.importance.choose(plan.text, model, tok)
            plan.receipt["seconds"]["importance"] += time.perf_counter() - t
            plan.receipt["objective"] = plan.objective.name
        elif self.rows_objective is not None:  # I off: the fixed objective, as without row edits
            plan.objective = self.objective
            plan.receipt["objective"] = self.objective.name

    def target_rows(self, rows: list[int], examples: list, model, tok, least: int = 1) -> tuple[list[int], dict | None]:
        """T under token-keyed edits: the request's own rows ranked by :func:`row_scores`; the top ones that hold
        ``layers.rows_mass`` of the total score are edited (all of them when every score is 0)."""
        if self.layers is None or self.layers.cfg.rows_mass >= 1 or len(rows) <= least:
            return rows, None
        t = time.perf_counter()
        scores = row_scores(model, tok, examples, rows, self.layers.cfg.batch_size)
        order = sorted(range(len(rows)), key=lambda i: (-scores[i], rows[i]))
        total, kept, acc = sum(scores), [], 0.0
        for i in order if total > 0 else ():  # every score 0: nothing to rank, every row is kept
            if len(kept) >= least and acc >= self.layers.cfg.rows_mass * total:
                break
            kept.append(i)
            acc += scores[i]
        kept = kept or order
        receipt = {
            "candidates": list(rows),
            "scores": scores,
            "kept": len(kept),
            "mass": self.layers.cfg.rows_mass,
            "seconds": time.perf_counter() - t,
        }
        return sorted(rows[i] for i in kept), receipt

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
