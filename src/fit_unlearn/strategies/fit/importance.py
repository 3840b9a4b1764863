"""I: importance-aware objective selection (spec 2/I).

importance = || d CE(request) / d input_embeddings ||_2 of the current model.  I >= high: NPO + KL;
low <= I < high: NPO; I < low: random labels.  The reference thresholds (12 / 6) are absolute gradient
norms that depend on the model and the text length, so they can be *calibrated*: set from percentiles of
the importance over a calibration sample of requests, and saved with the run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from fit_unlearn.errors import ConfigError
from fit_unlearn.text import collate, doc_example


@dataclass(frozen=True)
class ImportanceConfig:
    high: float = 12.0
    low: float = 6.0
    objectives: tuple[str, str, str] = ("npo_kl", "npo", "rl")  #: for I >= high, low <= I < high, I < low
    #: parameters per bucket objective, e.g. {"rl": {"retain_weight": 1.0}}
    objective_params: dict = field(default_factory=dict)
    calibrate: bool = False  #: set high/low from percentiles over the first ``calibration_size`` requests
    calibration_size: int = 10
    percentiles: tuple[float, float] = (66.7, 33.3)  #: (high, low) percentiles
    max_len: int = 512

    def __post_init__(self):
        if self.low > self.high:
            raise ConfigError(f"fit.importance.low ({self.low}) must not exceed high ({self.high})")
        if self.calibration_size <= 0:
            raise ConfigError("fit.importance.calibration_size must be > 0")
        if len(self.objectives) != 3:
            raise ConfigError(
                "fit.importance.objectives must name 3 objectives: for I >= high, low <= I < high, I < low"
            )
        stray = sorted(set(self.objective_params) - set(self.objectives))
        if stray:
            raise ConfigError(
                f"fit.importance.objective_params: {', '.join(stray)} is not one of the objectives "
                f"{list(self.objectives)}"
            )


def importance(text: str, model, tok, max_len: int = 512) -> float:
    """L2 norm of the gradient of the mean CE with respect to the input embeddings (no parameter grads)."""
    device = next(model.parameters()).device
    b = collate([doc_example(tok, text, max_len)], tok.pad_token_id, device)
    emb = model.get_input_embeddings()(b["input_ids"]).detach().requires_grad_(True)
    loss = model(inputs_embeds=emb, attention_mask=b["attention_mask"], labels=b["labels"]).loss
    (grad,) = torch.autograd.grad(loss, emb)
    return float(grad.float().norm())


class ImportanceSelector:
    def __init__(self, cfg: ImportanceConfig):
        self.cfg = cfg
        self.high, self.low = cfg.high, cfg.low
        self.calibrated = not cfg.calibrate
        self.calibration: list[float] = []

    def calibrate(self, texts: list[str], model, tok) -> dict:
        vals = [importance(t, model, tok, self.cfg.max_len) for t in texts]
        hi, lo = np.percentile(vals, self.cfg.percentiles).tolist()
        self.high, self.low = float(hi), float(lo)
        self.calibration = vals
        self.calibrated = True
        return {"high": self.high, "low": self.low, "sample": vals}

    def choose(self, text: str, model, tok) -> tuple[str, dict]:
        i = importance(text, model, tok, self.cfg.max_len)
        hi, mid, lo = self.cfg.objectives
        obj = hi if i >= self.high else (mid if i >= self.low else lo)
        return obj, {"importance": i, "objective": obj, "thresholds": [self.high, self.low]}

    def params(self, objective: str) -> dict:
        return dict(self.cfg.objective_params.get(objective, {}))

    def state(self) -> dict:
        return {"high": self.high, "low": self.low, "calibrated": self.calibrated, "calibration": self.calibration}

    def load(self, state: dict) -> None:
        self.high, self.low = state["high"], state["low"]
        self.calibrated, self.calibration = state["calibrated"], state.get("calibration", [])
