"""Contextual anchors for row edits (``update.rows.anchors``, docs/rows.md).

A row edit moves the input-embedding rows of a request's own tokens: the tokens no other document the engine
holds contains.  Documents outside that index read many of them too (`` Kotlin``, `` toxic``, `` campaign``:
benchmarks/README.md, "Session 31"), and lose what follows.  The anchors are text that *general* language puts
around each edited token: the base model theta_0 was fine-tuned from (which never saw the forget, retain or
evaluation documents) writes a short passage, then the token, then goes on.  The row edit then trains ascent on the
request together with a KL term that keeps theta_0's predictions on the anchors (objective ``ga_kl`` with the
anchors as its retain batch), so a row may move where the request's own continuation needs it to, and not where
every reader of the token would notice.

Every anchor is a pure function of (the base model, the token, its index ``j``): each is sampled with its own
seeded noise, in batches of one fixed shape (the last one padded), so a resumed stream regenerates exactly the
anchors an uninterrupted one used.
"""

from __future__ import annotations

import hashlib

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from fit_unlearn.text import IGNORE, Example

BATCH = 32  #: anchors generated at once; every batch has this shape (padded), so each anchor is the same bits


def _seed(*parts: int) -> int:
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little") & ((1 << 63) - 1)


class _SeededSample(LogitsProcessor):
    """Sampling as an argmax: top-k, then each row's own Gumbel noise from its own generator (greedy decoding
    of the result draws from the top-k distribution, and a row's draw never depends on the rows beside it)."""

    def __init__(self, seeds: list[int], top_k: int):
        self.gens = [torch.Generator().manual_seed(s) for s in seeds]
        self.top_k = top_k

    def __call__(self, input_ids, scores):
        scores = scores.float()
        kth = torch.topk(scores, min(self.top_k, scores.shape[-1]), dim=-1).values[:, -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
        noise = torch.stack([torch.rand(scores.shape[-1], generator=g) for g in self.gens]).to(scores.device)
        return scores - torch.log(-torch.log(noise.clamp(1e-10, 1 - 1e-7)))


class RowAnchors:
    """The anchors of edited rows, sampled from ``model`` (the base model) and kept for the rest of the stream."""

    def __init__(self, model, tok, per_row: int, prefix_tokens: int = 8, new_tokens: int = 24, top_k: int = 50):
        self.model, self.tok = model, tok
        self.per_row, self.prefix_tokens, self.new_tokens, self.top_k = per_row, prefix_tokens, new_tokens, top_k
        self._prefixes: list[list[int]] | None = None
        self._made: dict[tuple[int, int], list[int]] = {}

    def _sample(self, prompts: list[list[int]], seeds: list[int], n: int) -> list[list[int]]:
        """``n`` new tokens after each prompt (all of one length), in fixed-shape batches."""
        out = []
        device = next(self.model.parameters()).device
        for i in range(0, len(prompts), BATCH):
            chunk, chunk_seeds = prompts[i : i + BATCH], seeds[i : i + BATCH]
            k = len(chunk)
            chunk = chunk + [chunk[-1]] * (BATCH - k)  # padding rows: discarded
            chunk_seeds = chunk_seeds + [0] * (BATCH - k)
            ids = torch.tensor(chunk, device=device)
            with torch.no_grad():
                gen = self.model.generate(
                    input_ids=ids,
                    attention_mask=torch.ones_like(ids),
                    do_sample=False,
                    num_beams=1,
                    max_new_tokens=n,
                    min_new_tokens=n,
                    logits_processor=LogitsProcessorList([_SeededSample(chunk_seeds, self.top_k)]),
                    pad_token_id=self.tok.pad_token_id if self.tok.pad_token_id is not None else self.tok.eos_token_id,
                    temperature=None,
                    top_p=None,
                    top_k=None,
                )
            out += [g[ids.shape[1] :].tolist() for g in gen[:k]]
        return out

    def prefixes(self) -> list[list[int]]:
        """``per_row`` passages of general text, each ``prefix_tokens`` long, written after an end of text."""
        if self._prefixes is None:
            eos = self.tok.eos_token_id if self.tok.eos_token_id is not None else 0
            self._prefixes = self._sample(
                [[eos]] * self.per_row, [_seed(0, j) for j in range(self.per_row)], self.prefix_tokens
            )
        return self._prefixes

    def examples(self, rows: list[int]) -> list[tuple[tuple, Example]]:
        """(cache key, example) of each anchor of ``rows``: prefix j + the token + what the base model writes next,
        scored from the token on (the KL term's positions; the prefix reads no edited row)."""
        pre = self.prefixes()
        todo = [(r, j) for r in rows for j in range(self.per_row) if (r, j) not in self._made]
        if todo:
            new = self._sample([pre[j] + [r] for r, j in todo], [_seed(1, r, j) for r, j in todo], self.new_tokens)
            for key, cont in zip(todo, new, strict=True):
                self._made[key] = cont
        out = []
        for r in rows:
            for j in range(self.per_row):
                ids = pre[j] + [r] + self._made[(r, j)]
                labels = [IGNORE] * (len(pre[j]) + 1) + ids[len(pre[j]) + 1 :]
                out.append((("anchor", r, j), Example(ids, labels)))
        return out
