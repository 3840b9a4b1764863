"""I: importance-aware objective selection (spec 2/I).

importance = || d CE(request) / d input_embeddings ||_2 of the current model.  I >= high: NPO + KL;
low <= I < high: NPO; I < low: random labels.  The reference thresholds (12 / 6) are absolute gradient
norms that depend on the model and the text length, so they can be *calibrated*: set from percentiles of
the importance over a calibration sample of requests, and saved with the run.
"""

from __future__ import annotations

import numpy as np
import torch

from fit_unlearn.objectives import Objective
from fit_unlearn.strategies.fit.config import ImportanceConfig
from fit_unlearn.text import collate, doc_example


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

    def choose(self, text: str, model, tok) -> tuple[Objective, dict]:
        """The resolved objective of the request's bucket, and what the receipt records."""
        i = importance(text, model, tok, self.cfg.max_len)
        hi, mid, lo = self.cfg.objectives
        obj = hi if i >= self.high else (mid if i >= self.low else lo)
        return self.cfg.objective(obj), {"importance": i, "objective": obj, "thresholds": [self.high, self.low]}

    def state(self) -> dict:
        return {"high": self.high, "low": self.low, "calibrated": self.calibrated, "calibration": self.calibration}

    def load(self, state: dict) -> None:
        self.high, self.low = state["high"], state["low"]
        self.calibrated, self.calibration = state["calibrated"], state.get("calibration", [])
