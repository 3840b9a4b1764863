"""The baseline strategy: every request is unlearned with one fixed objective on fixed parameters."""

from __future__ import annotations

from fit_unlearn.data.documents import Document
from fit_unlearn.errors import ConfigError
from fit_unlearn.objectives import get_objective
from fit_unlearn.strategies.base import Strategy, UpdatePlan, register_strategy


@register_strategy("sequential")
class SequentialStrategy(Strategy):
    def __init__(
        self,
        objective: str = "npo",
        objective_params: dict | None = None,
        trainable="all",
        include_qa: bool = True,
        device: str = "cpu",
        **options,
    ):
        if options:
            raise ConfigError(
                f"strategy.fit: options {', '.join(sorted(options))} are for strategy 'fit'; the sequential "
                "strategy takes none"
            )
        get_objective(objective).make_config(objective_params)  # validate early
        self.objective = get_objective(objective).name
        self.objective_params = dict(objective_params or {})
        self.trainable = trainable
        self.include_qa = include_qa

    def plan(self, request: Document, model, tok) -> UpdatePlan:
        return UpdatePlan(
            text=request.text,
            objective=self.objective,
            objective_params=self.objective_params,
            trainable=self.trainable,
            qa=request.qa if self.include_qa else (),
            receipt={"objective": self.objective},
        )
