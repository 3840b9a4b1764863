"""T: targeted layer attribution (spec 2/T).

score_l = |L_l - L_0|, where L_0 is the current model's CE on the first ``max_tokens`` tokens of the
(filtered) request and L_l the same loss with decoder layer l skipped.  Skipping a layer means its output
is its residual input, which equals zeroing the block's parameters in a pre-norm residual network, without
copying or touching any weight.  The top-k layers' attention and MLP weights are the only trainable
parameters for the request.

Two ways to compute the scores, with the same result:

* ``prefix`` (default where it applies): one normal forward records every layer's input and call
  arguments; the variant that skips layer l shares layers 0..l-1 with it, so only layers l+1.. are run
  for it, batched over all variants alive at that depth.  That is L(L-1)/2 layer calls instead of L^2.
  The final norm and output head are found by name and checked against the normal forward's logits; if
  they cannot be found or do not reproduce them (logit soft-capping, scaling...), ``hooks`` is used.
* ``hooks``: L full forwards (batched, one row per skipped layer) with a forward hook that makes row r
  skip layer r.  Works for any model whose layer list is known.

``relative: true`` (an extension, off by default): divide each score by the same layer's mean score on a
sample of retain documents, measured once before the stream.  Layers that every text needs (the first and
last ones) then stop being chosen for every request just because skipping them breaks everything.
"""

from __future__ import annotations

import torch

from fit_unlearn.errors import ConfigError
from fit_unlearn.layers import attr_path, decoder_layers, unwrap
from fit_unlearn.strategies.fit.config import LayerConfig
from fit_unlearn.text import IGNORE, Example, collate, doc_example, sequence_ce, token_logprobs

#: attribute paths of the final norm applied after the last decoder layer, by architecture family
FINAL_NORM_PATHS = (
    "model.norm",
    "transformer.ln_f",
    "gpt_neox.final_layer_norm",
    "model.decoder.final_layer_norm",
    "transformer.norm",
    "model.language_model.norm",
)


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


def _expand(value, n: int):
    """Broadcast batch-1 tensors in a layer's call arguments to ``n`` rows (other values unchanged)."""
    if torch.is_tensor(value) and value.dim() > 0 and value.shape[0] == 1:
        return value.expand(n, *value.shape[1:])
    if isinstance(value, tuple):
        return tuple(_expand(v, n) for v in value)
    return value


class LayerAttribution:
    def __init__(self, cfg: LayerConfig):
        self.cfg = cfg
        self.profile: list[float] | None = None  #: mean retain score per layer (``relative``)
        self._prefix_ok: bool | None = None if cfg.method != "hooks" else False

    # --- scoring -------------------------------------------------------------------------------------
    @torch.no_grad()
    def scores(self, text: str, model, tok) -> list[float]:
        """|L_l - L_0| for every decoder layer l of the current model."""
        device = next(model.parameters()).device
        batch = collate([doc_example(tok, text, self.cfg.max_tokens)], tok.pad_token_id, device)
        if self._prefix_ok is not False:
            out = self._scores_prefix(batch, model)
            if out is not None:
                return out
            if self.cfg.method == "prefix":
                raise ConfigError(
                    "fit.layers.method=prefix: this model's final norm/output head could not be found or does not "
                    "reproduce its logits; use method: hooks (or auto)"
                )
        return self._scores_hooks(batch, model)

    def _scores_hooks(self, base: dict, model) -> list[float]:
        _, layers = decoder_layers(model)
        l0 = float(
            sequence_ce(
                model(input_ids=base["input_ids"], attention_mask=base["attention_mask"]).logits, base["labels"]
            )[0]
        )
        out: list[float] = []
        n = len(layers)
        for start in range(0, n, self.cfg.batch_size):
            rows = list(range(start, min(n, start + self.cfg.batch_size)))
            ids = base["input_ids"].expand(len(rows), -1)
            handles = [
                layers[layer].register_forward_hook(_row_skip_hook(r), with_kwargs=True) for r, layer in enumerate(rows)
            ]
            try:
                logits = model(input_ids=ids, attention_mask=base["attention_mask"].expand(len(rows), -1)).logits
            finally:
                for h in handles:
                    h.remove()
            out += [abs(float(v) - l0) for v in sequence_ce(logits, base["labels"].expand(len(rows), -1))]
        return out

    def _scores_prefix(self, base: dict, model) -> list[float] | None:
        m = unwrap(model)
        norm = next((x for x in (attr_path(m, p) for p in FINAL_NORM_PATHS) if x is not None), None)
        head = m.get_output_embeddings() if hasattr(m, "get_output_embeddings") else None
        if norm is None or head is None:
            self._prefix_ok = False
            return None
        _, layers = decoder_layers(model)
        calls: list[tuple[tuple, dict]] = []

        def record(module, args, kwargs):
            calls.append((args, kwargs))

        last: list[torch.Tensor] = []
        handles = [layer.register_forward_pre_hook(record, with_kwargs=True) for layer in layers]
        handles.append(
            layers[-1].register_forward_hook(lambda mod, a, o: last.append(o[0] if isinstance(o, tuple) else o))
        )
        try:
            logits0 = model(input_ids=base["input_ids"], attention_mask=base["attention_mask"], use_cache=False).logits
        finally:
            for h in handles:
                h.remove()
        if len(calls) != len(layers) or not last:
            self._prefix_ok = False
            return None
        if self._prefix_ok is None:  # first use: the found norm + head must reproduce the model's logits
            ok = torch.allclose(head(norm(last[0])).float(), logits0.float(), rtol=1e-3, atol=1e-3)
            self._prefix_ok = bool(ok)
            if not ok:
                return None
        labels = base["labels"]
        l0 = float(sequence_ce(logits0, labels)[0])

        def hidden_in(j):
            args, kwargs = calls[j]
            return args[0] if args else kwargs["hidden_states"]

        n = len(layers)
        h = None  # rows: variants that skipped a layer < j, in order of the skipped layer
        for j in range(n):
            if h is not None:
                args, kwargs = calls[j]
                rows = h.shape[0]
                kw = {k: _expand(v, rows) for k, v in kwargs.items() if k != "hidden_states"}
                rest = tuple(_expand(a, rows) for a in args[1:])
                o = layers[j](h, *rest, **kw)
                h = o[0] if isinstance(o, tuple) else o
            # the variant that skips layer j leaves it with layer j's input
            h = hidden_in(j) if h is None else torch.cat([h, hidden_in(j)], 0)
        out: list[float] = []
        for start in range(0, n, self.cfg.batch_size):
            chunk = h[start : start + self.cfg.batch_size]
            logits = head(norm(chunk))
            out += [abs(float(v) - l0) for v in sequence_ce(logits, labels.expand(chunk.shape[0], -1))]
        return out

    # --- the retain profile (``relative``) -----------------------------------------------------------
    def calibrate(self, retain_texts: list[str], model, tok) -> dict:
        texts = retain_texts[: self.cfg.retain_sample]
        if not texts:
            raise ConfigError("fit.layers.relative needs retain documents in the prepared data")
        per = [self.scores(t, model, tok) for t in texts]
        self.profile = [sum(col) / len(col) for col in zip(*per, strict=True)]
        return {"layer_profile": self.profile, "retain_docs": len(texts)}

    @property
    def needs_calibration(self) -> bool:
        return self.cfg.relative and self.profile is None

    def select(self, text: str, model, tok) -> tuple[list[int], dict]:
        s = self.scores(text, model, tok)
        rank = s
        if self.cfg.relative:
            if self.profile is None or len(self.profile) != len(s):
                raise ConfigError("fit.layers.relative: the retain profile is missing; it is set before the stream")
            floor = 1e-3 * max(self.profile)
            rank = [v / max(p, floor) for v, p in zip(s, self.profile, strict=True)]
        k = self.cfg.top_k(len(s))
        chosen = sorted(sorted(range(len(s)), key=lambda i: -rank[i])[:k])
        info = {"layers": chosen, "layer_scores": s, "k": k}
        if self.cfg.relative:
            info["relative_scores"] = rank
        return chosen, info


@torch.no_grad()
def row_scores(model, tok, examples: list[Example], rows: list[int], batch_size: int = 8) -> list[float]:
    """T for token-keyed edits (``update.trainable: rows``): score_r = |L_r - L_0| for each token id r of ``rows``,
    where L_0 is the current model's mean token CE over ``examples`` (the sequences the request is unlearned on)
    and L_r the same loss with every occurrence of r read as a zero input embedding: the row-level analogue of
    skipping a layer.  The unchanged sequence is the first row of every batch, so that L_r - L_0 compares two rows
    computed alike (batched kernels differ slightly on GPU and in 16 bits)."""
    device = next(model.parameters()).device
    embed = unwrap(model).get_input_embeddings()
    delta = torch.zeros(len(rows), dtype=torch.float64)
    scored = 0
    for ex in examples:
        b = collate([ex], tok.pad_token_id, device)
        ids, labels = b["input_ids"][0], b["labels"]
        n = int((labels[:, 1:] != IGNORE).sum())
        if n == 0:
            continue
        scored += n
        e = embed(ids[None])
        present = [i for i, r in enumerate(rows) if bool((ids == r).any())]
        for k in range(0, len(present), batch_size):
            chunk = present[k : k + batch_size]
            var = e.expand(len(chunk) + 1, *e.shape[1:]).clone()
            for j, i in enumerate(chunk, start=1):
                var[j, ids == rows[i]] = 0
            logits = model(inputs_embeds=var, attention_mask=b["attention_mask"].expand(len(chunk) + 1, -1)).logits
            ce = -token_logprobs(logits, labels.expand(len(chunk) + 1, -1))[0].sum(-1).double().cpu()
            delta[chunk] += ce[1:] - ce[0]
    return (delta / max(scored, 1)).abs().tolist()
