"""Loss helpers shared by FIT's three mechanisms (one place, never copied)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fit_unlearn.text import collate, doc_example, token_logprobs


@torch.no_grad()
def mean_ce(model, tok, texts: Sequence[str], max_len: int = 512, batch_size: int = 8) -> list[float]:
    """Mean token cross-entropy of each text under the current model (batched, no grad)."""
    device = next(model.parameters()).device
    out: list[float] = []
    for i in range(0, len(texts), batch_size):
        exs = [doc_example(tok, t, max_len) for t in texts[i : i + batch_size]]
        b = collate(exs, tok.pad_token_id, device)
        lp, mask = token_logprobs(model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits,
                                 b["labels"])
        out += (-(lp.sum(-1)) / mask.sum(-1).clamp_min(1)).tolist()
    return out
