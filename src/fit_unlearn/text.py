"""Tokenisation shared by training, unlearning and metrics: one place decides how a document and a
QA pair become token ids, so that what is trained is exactly what is measured."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from fit_unlearn.data.documents import QA, Document
from fit_unlearn.data.qa import qa_prompt

IGNORE = -100


def encode_qa(tok, qa: QA, max_len: int = 256, eos: bool = True) -> tuple[list[int], int]:
    """ids of prompt + " answer" (+ eos) and the number of prompt tokens."""
    p = tok(qa_prompt(qa), add_special_tokens=False)["input_ids"]
    a = tok(" " + qa.answer, add_special_tokens=False)["input_ids"]
    ids = p + a + ([tok.eos_token_id] if eos and tok.eos_token_id is not None else [])
    return ids[:max_len], len(p)


def encode_text(tok, text: str, max_len: int | None = 256, eos: bool = True) -> list[int]:
    """ids of ``text`` (+ eos), cut at ``max_len`` tokens (None: all of them)."""
    ids = tok(text, add_special_tokens=False)["input_ids"]
    if eos and tok.eos_token_id is not None:
        ids = ids + [tok.eos_token_id]
    return ids[:max_len]


@dataclass
class Example:
    """One training / scoring sequence: ids and labels (prompt tokens masked with -100)."""

    ids: list[int]
    labels: list[int]


def doc_example(tok, text: str, max_len: int | None = 256) -> Example:
    ids = encode_text(tok, text, max_len)
    return Example(ids, list(ids))


def windows(ex: Example, size: int) -> list[tuple[int, Example]]:
    """``ex`` as (start, window) pairs: overlapping windows of at most ``size`` tokens that together score
    each of its labels exactly once, for sequences longer than a model should see at once.  Window k starts
    at k * (size // 2) and scores only the tokens past the end of window k-1, so every token is predicted from
    at least size - size // 2 tokens of context (or all the tokens before it).  A sequence of at most
    ``size`` tokens is one window: itself."""
    if size < 2:
        raise ValueError(f"window size must be >= 2, got {size}")
    n = len(ex.ids)
    if n <= size:
        return [(0, ex)]
    stride, out, start, scored_to = size // 2, [], 0, 0
    while True:
        end = min(start + size, n)
        out.append((start, Example(ex.ids[start:end], [IGNORE] * (scored_to - start) + ex.labels[scored_to:end])))
        if end == n:
            return out
        start, scored_to = start + stride, end


def qa_example(tok, qa: QA, max_len: int = 256) -> Example:
    ids, n_prompt = encode_qa(tok, qa, max_len)
    return Example(ids, [IGNORE] * n_prompt + ids[n_prompt:])


def training_examples(tok, docs: Sequence[Document], with_qa: bool = True, max_len: int = 256) -> list[Example]:
    out = [doc_example(tok, d.text, max_len) for d in docs]
    if with_qa:
        out += [qa_example(tok, q, max_len) for d in docs for q in d.qa]
    return out


def collate(examples: Sequence[Example], pad_id: int, device: torch.device | str = "cpu", left: bool = False):
    """Pad to a batch: input_ids, attention_mask, labels (pad positions are -100)."""
    n = max(len(e.ids) for e in examples)
    ids = torch.full((len(examples), n), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), n), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), n), dtype=torch.long)
    for i, e in enumerate(examples):
        sl = slice(n - len(e.ids), n) if left else slice(0, len(e.ids))
        ids[i, sl] = torch.tensor(e.ids)
        labels[i, sl] = torch.tensor(e.labels)
        mask[i, sl] = 1
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-position log p(label) of the next token and the mask of scored positions, both [B, T-1]."""
    logits = logits[:, :-1].float()
    tgt = labels[:, 1:]
    mask = tgt != IGNORE
    lp = torch.log_softmax(logits, dim=-1).gather(-1, tgt.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    return lp * mask, mask


def sequence_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of each sequence over its scored positions, [B]."""
    lp, mask = token_logprobs(logits, labels)
    return -(lp.sum(-1) / mask.sum(-1).clamp_min(1))
