"""Per-split scores of the FIT paper (spec section 4).

* probability  p(S) = mean over QA pairs of P(answer | question)^(1/|answer|), teacher-forced;
* ROUGE-L      r(S) = mean ROUGE-L F (stemmed, ``rouge-score``) of the greedy answer (new tokens only);
* token acc.   a(S) = mean over documents of teacher-forced next-token argmax accuracy (whole documents);
* composite    100 * cbrt(p * r * a);
* paraphrase   100 * sqrt(p * r) on paraphrased questions (no token accuracy: a paraphrase is not a
               document), the knowledge beyond the trained strings.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from fit_unlearn.data.documents import QA, Document
from fit_unlearn.text import collate, doc_example, qa_example, qa_prompt, sequence_ce, token_logprobs, windows


def composite(p: float, r: float, a: float) -> float:
    return 100.0 * (max(p, 0.0) * max(r, 0.0) * max(a, 0.0)) ** (1.0 / 3.0)


def paraphrase_score(p: float, r: float) -> float:
    return 100.0 * (max(p, 0.0) * max(r, 0.0)) ** 0.5


def _mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else 0.0


def scores_from_items(items: Sequence[dict]) -> dict:
    """p, r, a and the composite of a set of per-document items (as written by ``evaluate_split``), plus
    the paraphrase scores where the items have paraphrases."""
    qa = [q for it in items for q in it["qa"]]
    p = _mean(q["probability"] for q in qa)
    r = _mean(q["rouge_l"] for q in qa)
    a = _mean(it["token_acc"] for it in items)
    out = {"probability": p, "rouge_l": r, "token_acc": a, "score": composite(p, r, a), "n_docs": len(items)}
    para = [q for it in items for q in it.get("paraphrases", [])]
    if para:
        pp, pr = _mean(q["probability"] for q in para), _mean(q["rouge_l"] for q in para)
        out["paraphrase"] = {"probability": pp, "rouge_l": pr, "score": paraphrase_score(pp, pr), "n_qa": len(para)}
    return out


def doc_score(item: dict) -> float:
    """The composite of one document's item (its own QA pairs and token accuracy)."""
    return scores_from_items([item])["score"]


def _batches(seq: Sequence, n: int):
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


@torch.no_grad()
def doc_token_stats(
    model,
    tok,
    docs: Sequence[Document],
    batch_size: int = 8,
    max_len: int | None = None,
    progress: bool = False,
    window: int = 512,
) -> list[dict]:
    """Per document: token accuracy, mean log-prob, Min-K% inputs and extraction strength, from ONE
    teacher-forced pass over the whole document (its first ``max_len`` tokens when given); a document longer
    than ``window`` tokens is run in overlapping windows (:func:`fit_unlearn.text.windows`), each token
    scored once, ``batch_size`` windows per forward.  Extraction strength uses that greedy decoding
    reproduces a suffix exactly iff every teacher-forced argmax in it is right: ES = 1 - k*/n with k* the
    shortest prefix after which all predictions are right."""
    device = next(model.parameters()).device
    docs = list(docs)
    parts = [(i, w) for i, d in enumerate(docs) for _, w in windows(doc_example(tok, d.text, max_len), window)]
    lps: list[list[torch.Tensor]] = [[] for _ in docs]
    oks: list[list[torch.Tensor]] = [[] for _ in docs]
    for chunk in tqdm(list(_batches(parts, batch_size)), desc="token stats", disable=not progress, leave=False):
        b = collate([w for _, w in chunk], tok.pad_token_id, device)
        logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
        lp, mask = token_logprobs(logits, b["labels"])
        correct = (logits[:, :-1].argmax(-1) == b["labels"][:, 1:]) & mask
        for row, (i, _) in enumerate(chunk):  # a document's windows come in order: its tokens in order
            lps[i].append(lp[row][mask[row]])
            oks[i].append(correct[row][mask[row]])
    out = []
    for d, lp_parts, ok_parts in zip(docs, lps, oks, strict=True):
        lp, c = torch.cat(lp_parts), torch.cat(ok_parts)
        n = len(c)
        wrong = (~c).nonzero()
        k_star = int(wrong[-1]) + 2 if len(wrong) else 1  # prefix tokens needed (>= 1)
        out.append(
            {
                "id": d.id,
                "token_acc": float(c.float().mean()) if n else 0.0,
                "mean_logprob": float(lp.mean()) if n else 0.0,
                "token_logprobs": lp.tolist(),
                "extraction_strength": 1.0 - k_star / (n + 1),
            }
        )
    return out


@torch.no_grad()
def qa_probabilities(model, tok, qas: Sequence[QA], batch_size: int = 16) -> list[float]:
    device = next(model.parameters()).device
    res = []
    for chunk in _batches(list(qas), batch_size):
        exs = [qa_example(tok, q) for q in chunk]
        for e in exs:  # score the answer only, not the eos appended for training
            e.labels[-1] = -100 if e.ids[-1] == tok.eos_token_id else e.labels[-1]
        b = collate(exs, tok.pad_token_id, device)
        lp, mask = token_logprobs(
            model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits, b["labels"]
        )
        res += [math.exp(float(lp[i].sum() / mask[i].sum())) for i in range(len(chunk))]
    return res


@torch.no_grad()
def generate_answers(model, tok, prompts: Sequence[str], max_new_tokens: int = 48, batch_size: int = 16) -> list[str]:
    """Greedy, batched, left-padded generation; returns the new text only, cut at the first newline."""
    device = next(model.parameters()).device
    old_side = tok.padding_side
    tok.padding_side = "left"
    outs: list[str] = []
    try:
        for chunk in _batches(list(prompts), batch_size):
            enc = tok(list(chunk), return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            gen = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                num_beams=1,
                pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id,
                temperature=None,
                top_p=None,
                top_k=None,
            )
            new = gen[:, enc["input_ids"].shape[1] :]
            for row in tok.batch_decode(new, skip_special_tokens=True):
                outs.append(row.strip().split("\n")[0].strip())
    finally:
        tok.padding_side = old_side
    return outs


@torch.no_grad()
def mean_ce(
    model, tok, texts: Sequence[str], max_len: int | None = 512, batch_size: int = 8, window: int | None = None
) -> list[float]:
    """Mean token cross-entropy of each text under the model (batched, no grad), over its first ``max_len``
    tokens (None: all of them, e.g. a whole request).  A text longer than ``window`` tokens (default:
    ``max_len``, else 512) is scored in overlapping windows (:func:`fit_unlearn.text.windows`), each token
    once."""
    device = next(model.parameters()).device
    texts = list(texts)
    window = window or max_len or 512
    if max_len is not None and max_len <= window:  # one window per text: one batched forward
        out: list[float] = []
        for chunk in _batches(texts, batch_size):
            b = collate([doc_example(tok, t, max_len) for t in chunk], tok.pad_token_id, device)
            logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
            out += sequence_ce(logits, b["labels"]).tolist()
        return out
    parts = [(i, w) for i, t in enumerate(texts) for _, w in windows(doc_example(tok, t, max_len), window)]
    lp_sum, n_scored = [0.0] * len(texts), [0] * len(texts)
    for chunk in _batches(parts, batch_size):
        b = collate([w for _, w in chunk], tok.pad_token_id, device)
        logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
        lp, mask = token_logprobs(logits, b["labels"])
        for (i, _), s, m in zip(chunk, lp.sum(-1).tolist(), mask.sum(-1).tolist(), strict=True):
            lp_sum[i] += s
            n_scored[i] += m
    return [-s / max(m, 1) for s, m in zip(lp_sum, n_scored, strict=True)]


_SCORER = None


def rouge_l(prediction: str, reference: str) -> float:
    global _SCORER
    if _SCORER is None:
        from rouge_score import rouge_scorer

        _SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return _SCORER.score(reference, prediction)["rougeL"].fmeasure


@dataclass
class SplitScores:
    probability: float
    rouge_l: float
    token_acc: float
    score: float
    n_docs: int
    n_qa: int
    items: list[dict] = field(default_factory=list)
    #: p, r and score on the paraphrased questions (when asked for and present)
    paraphrase: dict | None = None

    def summary(self) -> dict:
        out = {k: getattr(self, k) for k in ("probability", "rouge_l", "token_acc", "score", "n_docs", "n_qa")}
        if self.paraphrase is not None:
            out["paraphrase"] = self.paraphrase
        return out


def evaluate_split(
    model,
    tok,
    docs: Sequence[Document],
    *,
    batch_size: int = 16,
    max_new_tokens: int | None = None,
    progress: bool = False,
    token_stats: list[dict] | None = None,
    paraphrases: bool = False,
) -> SplitScores:
    """p, r, a and the composite score of one split, with per-document items; with ``paraphrases`` also p
    and r on every document's paraphrased questions (item key ``paraphrases``)."""
    docs = list(docs)
    if not docs:
        return SplitScores(0.0, 0.0, 0.0, 0.0, 0, 0)
    stats = token_stats or doc_token_stats(model, tok, docs, batch_size=max(1, batch_size // 2), progress=progress)
    qas = [(d.id, "qa", q) for d in docs for q in d.qa]
    if paraphrases:
        qas += [(d.id, "paraphrases", q) for d in docs for q in d.paraphrases]
    probs = qa_probabilities(model, tok, [q for _, _, q in qas], batch_size)
    longest = max(len(tok(" " + q.answer, add_special_tokens=False)["input_ids"]) for _, _, q in qas) if qas else 8
    gens = generate_answers(
        model, tok, [qa_prompt(q) for _, _, q in qas], max_new_tokens or min(96, longest + 8), batch_size
    )
    rouges = [rouge_l(g, q.answer) for g, (_, _, q) in zip(gens, qas, strict=True)]
    by_doc: dict[str, dict] = {s["id"]: {"id": s["id"], "token_acc": s["token_acc"], "qa": []} for s in stats}
    if paraphrases:
        for v in by_doc.values():
            v["paraphrases"] = []
    for (doc_id, kind, q), p, g, r in zip(qas, probs, gens, rouges, strict=True):
        by_doc[doc_id][kind].append(
            {"question": q.question, "answer": q.answer, "generated": g, "probability": p, "rouge_l": r}
        )
    items = list(by_doc.values())
    s = scores_from_items(items)
    n_qa = sum(len(it["qa"]) for it in items)
    return SplitScores(
        s["probability"], s["rouge_l"], s["token_acc"], s["score"], len(docs), n_qa, items, s.get("paraphrase")
    )
