"""I: importance-aware objective selection (spec 2/I).

importance = || d CE(request) / d input_embeddings ||_2 of the current model, over the whole request (in
overlapping windows of ``max_len`` tokens past that length).  I >= high: NPO + KL;
low <= I < high: NPO; I < low: random labels.  The reference thresholds (12 / 6) are absolute gradient
norms that depend on the model and the text length, so they can be *calibrated*: set from percentiles of
the importance over a calibration sample of requests, and saved with the run.
"""

from __future__ import annotations

import numpy as np
import torch

from fit_unlearn.objectives import Objective
from fit_unlearn.strategies.fit.config import ImportanceConfig
from fit_unlearn.text import IGNORE, collate, doc_example, windows


def importance(text: str, model, tok, max_len: int = 512) -> float:
    """L2 norm of the gradient of the mean CE of the whole ``text`` with respect to its input embeddings (no
    parameter grads).  A text longer than ``max_len`` tokens is run in overlapping windows of ``max_len``
    tokens (:func:`fit_unlearn.text.windows`, each token scored once): the mean CE is the sum of the windows'
    token CEs over all scored tokens, and a token's gradient sums over every window that sees it."""
    device = next(model.parameters()).device
    ex = doc_example(tok, text, max_len=None)
    parts = windows(ex, max_len)
    n_scored = sum(label != IGNORE for _, w in parts for label in w.labels[1:])
    grad = None
    for start, w in parts:
        b = collate([w], tok.pad_token_id, device)
        n_w = int((b["labels"][:, 1:] != IGNORE).sum())
        if n_w == 0:
            continue
        emb = model.get_input_embeddings()(b["input_ids"]).detach().requires_grad_(True)
        loss = model(inputs_embeds=emb, attention_mask=b["attention_mask"], labels=b["labels"]).loss
        (g,) = torch.autograd.grad(loss * (n_w / n_scored), emb)  # the window's share of the mean CE
        if grad is None:
            grad = g.new_zeros((len(ex.ids), g.shape[-1]), dtype=torch.float32)
        grad[start : start + g.shape[1]] += g[0].float()
    return 0.0 if grad is None else float(grad.norm())


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
