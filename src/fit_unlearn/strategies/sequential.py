"""The baseline strategy: every request is unlearned with one fixed objective on fixed parameters."""

from __future__ import annotations

from fit_unlearn.data.documents import Document
from fit_unlearn.strategies.base import Strategy, UpdatePlan, register_strategy


@register_strategy("sequential")
class SequentialStrategy(Strategy):
    def plan(self, request: Document, model, tok) -> UpdatePlan:
        return UpdatePlan(
            text=request.text,
            objective=self.objective,
            trainable=self.trainable,
            qa=request.qa if self.include_qa else (),
            receipt={"objective": self.objective.name},
        )
