"""T: targeted layer attribution (spec 2/T).

score_l = |L_l - L_0|, where L_0 is the current model's CE on the first ``max_tokens`` tokens of the
(filtered) request and L_l the same loss with decoder layer l skipped.  Skipping is a forward hook that
returns the layer's residual input, which equals zeroing the block's parameters in a pre-norm residual
network, without copying or touching any weight.  The top-k layers' attention and MLP weights are the
only trainable parameters for the request.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from fit_unlearn.errors import ConfigError
from fit_unlearn.layers import decoder_layers
from fit_unlearn.text import collate, doc_example, token_logprobs


@dataclass(frozen=True)
class LayerConfig:
    k: int | None = None  #: number of layers to train (reference: 8 of 32)
    fraction: float = 0.25  #: used when k is None
    max_tokens: int = 128
    batch_size: int = 8  #: layer-skip variants evaluated together (one row per skipped layer)

    def __post_init__(self):
        if self.k is not None and self.k <= 0:
            raise ConfigError(f"fit.layers.k must be > 0, got {self.k}")
        if not 0 < self.fraction <= 1:
            raise ConfigError(f"fit.layers.fraction must be in (0, 1], got {self.fraction}")

    def top_k(self, n_layers: int) -> int:
        return min(n_layers, self.k if self.k is not None else max(1, math.ceil(self.fraction * n_layers)))


def _row_skip_hook(row: int):
    """Forward hook: batch row ``row`` skips this layer (its output is the layer's residual input)."""

    def hook(module, args, kwargs, output):
        hidden_in = args[0] if args else kwargs["hidden_states"]
        out = output[0] if isinstance(output, tuple) else output
        if row < 0 or row >= out.shape[0]:
            return output
        out = out.clone()
        out[row] = hidden_in[row]
        return (out, *output[1:]) if isinstance(output, tuple) else out

    return hook


class LayerAttribution:
    def __init__(self, cfg: LayerConfig):
        self.cfg = cfg

    @torch.no_grad()
    def scores(self, text: str, model, tok) -> list[float]:
        """|L_l - L_0| for every decoder layer l; the skipped variants run batched, one row per layer."""
        _, layers = decoder_layers(model)
        device = next(model.parameters()).device
        ex = doc_example(tok, text, self.cfg.max_tokens)
        base = collate([ex], tok.pad_token_id, device)
        lp0, m0 = token_logprobs(model(input_ids=base["input_ids"], attention_mask=base["attention_mask"]).logits,
                                 base["labels"])
        l0 = float(-(lp0.sum() / m0.sum().clamp_min(1)))
        out: list[float] = []
        n = len(layers)
        for start in range(0, n, self.cfg.batch_size):
            rows = list(range(start, min(n, start + self.cfg.batch_size)))
            b = collate([ex] * len(rows), tok.pad_token_id, device)
            handles = [layers[layer].register_forward_hook(_row_skip_hook(r), with_kwargs=True)
                       for r, layer in enumerate(rows)]
            try:
                lp, mask = token_logprobs(model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits,
                                         b["labels"])
            finally:
                for h in handles:
                    h.remove()
            losses = -(lp.sum(-1) / mask.sum(-1).clamp_min(1))
            out += [abs(float(v) - l0) for v in losses]
        return out

    def select(self, text: str, model, tok) -> tuple[list[int], dict]:
        s = self.scores(text, model, tok)
        k = self.cfg.top_k(len(s))
        chosen = sorted(sorted(range(len(s)), key=lambda i: -s[i])[:k])
        return chosen, {"layers": chosen, "layer_scores": s, "k": k}
