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
from fit_unlearn.text import collate, doc_example


@dataclass(frozen=True)
class LayerConfig:
    k: int | None = None  #: number of layers to train (reference: 8 of 32)
    fraction: float = 0.25  #: used when k is None
    max_tokens: int = 128

    def __post_init__(self):
        if self.k is not None and self.k <= 0:
            raise ConfigError(f"fit.layers.k must be > 0, got {self.k}")
        if not 0 < self.fraction <= 1:
            raise ConfigError(f"fit.layers.fraction must be in (0, 1], got {self.fraction}")

    def top_k(self, n_layers: int) -> int:
        return min(n_layers, self.k if self.k is not None else max(1, math.ceil(self.fraction * n_layers)))


def _skip_hook(module, args, kwargs, output):
    hidden_in = args[0] if args else kwargs["hidden_states"]
    if isinstance(output, tuple):
        return (hidden_in, *output[1:])
    return hidden_in


class LayerAttribution:
    def __init__(self, cfg: LayerConfig):
        self.cfg = cfg

    @torch.no_grad()
    def scores(self, text: str, model, tok) -> list[float]:
        _, layers = decoder_layers(model)
        device = next(model.parameters()).device
        b = collate([doc_example(tok, text, self.cfg.max_tokens)], tok.pad_token_id, device)

        def loss() -> float:
            return float(model(**b).loss)

        l0 = loss()
        out = []
        for layer in layers:
            h = layer.register_forward_hook(_skip_hook, with_kwargs=True)
            try:
                out.append(abs(loss() - l0))
            finally:
                h.remove()
        return out

    def select(self, text: str, model, tok) -> tuple[list[int], dict]:
        s = self.scores(text, model, tok)
        k = self.cfg.top_k(len(s))
        chosen = sorted(sorted(range(len(s)), key=lambda i: -s[i])[:k])
        return chosen, {"layers": chosen, "layer_scores": s, "k": k}
