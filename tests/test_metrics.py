import math
from types import SimpleNamespace

import pytest
import torch

from fit_unlearn.evaluation import scores_from_items
from fit_unlearn.metrics.privacy import mia_auc, min_k_score
from fit_unlearn.metrics.reference import ReferencePoints, closeness, reference_at, retain_utility
from fit_unlearn.metrics.scores import composite, doc_token_stats, evaluate_split, generate_answers, rouge_l


def test_composite_is_cube_root_of_product():
    assert composite(0.5, 0.4, 0.8) == pytest.approx(100 * (0.16) ** (1 / 3))
    assert composite(0.0, 1.0, 1.0) == 0.0


def test_reference_interpolation_and_degrees():
    ref = ReferencePoints(forget_0=60.0, retain_0=30.0, forget_T=20.0, retain_T=32.0)
    assert reference_at(60, 20, 0, 100) == 60 and reference_at(60, 20, 100, 100) == 20
    assert reference_at(60, 20, 25, 100) == pytest.approx(50)
    # F_unl equal to the reference -> 1; half of it -> 0.5; double -> 0 (over-forgetting penalised alike)
    assert closeness(50, 50) == pytest.approx(1.0)
    assert closeness(25, 50) == pytest.approx(0.5)
    assert closeness(75, 50) == pytest.approx(0.5)
    assert closeness(150, 50) == 0.0
    assert retain_utility(31.0, ref, 50, 100) == pytest.approx(1.0)
    assert closeness(0.0, 0.0) == 1.0 and closeness(1.0, 0.0) == 0.0


def test_rouge_l_uses_stemming_and_f_measure():
    # stemmed: [the, cat, were, run] vs [the, cat, wa, run] -> LCS 3 of 4 each way (unstemmed it would be 2 of 4)
    assert rouge_l("the cats were running", "the cat was running") == pytest.approx(0.75)
    assert rouge_l("the cat was running", "the cats were running") == pytest.approx(0.75)
    # LCS 2: precision 2/4, recall 2/2 -> F = 2 * 0.5 * 1 / 1.5 = 2/3 (precision alone 0.5, recall alone 1.0)
    assert rouge_l("Bell Founder of Lowmarsh", "Bell Founder") == pytest.approx(2 / 3)
    assert rouge_l("Bell Founder", "Bell Founder") == 1.0
    assert rouge_l("", "Bell Founder") == 0.0


def test_min_k_and_mia_auc():
    assert min_k_score([-1, -2, -3, -4, -5], k=0.4) == pytest.approx(-4.5)
    members = [{"token_logprobs": [-0.1, -0.2, -0.3]}] * 3
    non = [{"token_logprobs": [-3.0, -4.0, -5.0]}] * 3
    assert mia_auc(members, non) == 1.0
    assert mia_auc(members, members) == 0.5


class _ScriptedLM(torch.nn.Module):
    """Predicts the true next token (logit 10, others 0) except where ``wrong`` = {(row, position)} says
    to predict token 0 instead: token accuracy, log-probs and extraction strength are then known by hand."""

    def __init__(self, vocab, wrong):
        super().__init__()
        self.vocab, self.wrong = vocab, wrong
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask=None):
        b, n = input_ids.shape
        target = torch.cat([input_ids[:, 1:], input_ids[:, :1]], dim=1)
        for row, pos in self.wrong:
            target[row, pos] = 0
        logits = torch.zeros(b, n, self.vocab)
        logits.scatter_(-1, target.unsqueeze(-1), 10.0)
        return SimpleNamespace(logits=logits)


class _TargetScriptedLM(torch.nn.Module):
    """Context-free: predicts the true next token (logit 10, others 0) unless that token is ``bad``, where it
    predicts token 0.  Every token's score is known by hand however a sequence is cut into windows."""

    def __init__(self, vocab, bad):
        super().__init__()
        self.vocab, self.bad = vocab, torch.tensor(sorted(bad) if isinstance(bad, set) else [bad])
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask=None):
        target = torch.roll(input_ids, -1, dims=1)
        target = torch.where(torch.isin(target, self.bad), torch.zeros_like(target), target)
        logits = torch.zeros(*input_ids.shape, self.vocab)
        logits.scatter_(-1, target.unsqueeze(-1), 10.0)
        return SimpleNamespace(logits=logits)


def _long_doc(tok, n_tokens):
    """A text of more than ``n_tokens`` tokens, its ids (with eos) and a token that occurs in it often."""
    from collections import Counter

    from fit_unlearn.text import encode_text

    text = " ".join(f"Ada repairs clock {i} in a small shop." for i in range(n_tokens // 4))
    ids = encode_text(tok, text, max_len=None)
    assert len(ids) > n_tokens
    bad = Counter(ids[300:]).most_common(1)[0][0]
    return text, ids, bad


def test_windows_score_every_token_once():
    from fit_unlearn.text import IGNORE, Example, windows

    ex = Example(list(range(100, 110)), list(range(100, 110)))
    parts = windows(ex, 4)
    assert [s for s, _ in parts] == [0, 2, 4, 6] and all(len(w.ids) <= 4 for _, w in parts)
    scored = [s + j for s, w in parts for j in range(1, len(w.ids)) if w.labels[j] != IGNORE]
    assert scored == list(range(1, 10))  # every next-token prediction once, in order
    for s, w in parts:
        assert w.ids == ex.ids[s : s + len(w.ids)]
        if s:  # at least size - size // 2 tokens of context before the first scored token
            assert w.labels[:2] == [IGNORE, IGNORE] and w.labels[2] != IGNORE
    assert windows(ex, 10) == [(0, ex)]


def test_mean_ce_scores_whole_texts_in_windows(tiny_tok):
    """mean_ce(max_len=None) scores every token of a long text, in windows: with a context-free model the
    value is known by hand, whatever the window."""
    from fit_unlearn.metrics.scores import mean_ce

    tok, vocab = tiny_tok, len(tiny_tok)
    text, ids, bad = _long_doc(tok, 600)
    model = _TargetScriptedLM(vocab, bad)
    n, k = len(ids) - 1, ids[1:].count(bad)
    right, wrong = 10 - math.log(math.exp(10) + vocab - 1), -math.log(math.exp(10) + vocab - 1)
    want = -(k * wrong + (n - k) * right) / n
    short = "Bo paints ships."
    for window in (16, 512, 4096):
        got = mean_ce(model, tok, [text, short], max_len=None, window=window, batch_size=3)
        assert got[0] == pytest.approx(want, rel=1e-5)
    k512 = ids[1:512].count(bad)
    assert mean_ce(model, tok, [text])[0] == pytest.approx(-(k512 * wrong + (511 - k512) * right) / 511, rel=1e-5)


def test_token_stats_and_extraction_strength(tiny_tok):
    from fit_unlearn.data.documents import Document
    from fit_unlearn.text import encode_text

    tok, vocab = tiny_tok, len(tiny_tok)
    texts = ["Ada repairs clocks in a small shop.", "Bo paints ships.", "Cy sings at the harbour every night."]
    docs = [Document(f"d{i}", t) for i, t in enumerate(texts)]
    n = [len(encode_text(tok, t)) - 1 for t in texts]  # scored next-token predictions of each document
    assert len(set(n)) == 3 and all(0 not in encode_text(tok, t)[1:] for t in texts)  # padding differs per row
    # doc 0: all right; doc 1: the first prediction wrong; doc 2: wrong at 2 and at the last prediction
    model = _ScriptedLM(vocab, {(1, 0), (2, 2), (2, n[2] - 1)})
    stats = doc_token_stats(model, tok, docs, batch_size=3)
    assert [s["id"] for s in stats] == ["d0", "d1", "d2"]
    assert [s["token_acc"] for s in stats] == pytest.approx([1.0, (n[1] - 1) / n[1], (n[2] - 2) / n[2]])
    # ES = 1 - k*/(n + 1), k* = shortest prefix (in tokens) from which greedy decoding reproduces the rest:
    # 1 token when every prediction is right, 2 when only the first is wrong, all n + 1 when the last is wrong
    assert [s["extraction_strength"] for s in stats] == pytest.approx([1 - 1 / (n[0] + 1), 1 - 2 / (n[1] + 1), 0.0])
    right, wrong = 10 - math.log(math.exp(10) + vocab - 1), -math.log(math.exp(10) + vocab - 1)
    assert [len(s["token_logprobs"]) for s in stats] == n
    assert stats[1]["token_logprobs"][:2] == pytest.approx([wrong, right], abs=1e-4)
    assert stats[0]["mean_logprob"] == pytest.approx(right, abs=1e-4)


def test_token_accuracy_scores_the_whole_document(tiny_tok):
    """A document's tail past token 256 counts: a model that gets only the tail wrong scores below 1 (by
    exactly the tail's share), long documents are run in windows, and a short one in the batch is unchanged."""
    from fit_unlearn.data.documents import Document
    from fit_unlearn.text import encode_text

    tok, vocab = tiny_tok, len(tiny_tok)
    head = " ".join(f"Ada repairs clock {i} in a small shop." for i in range(14))
    tail = " Zed sells old maps, quills and brass compasses by the river."
    ids = encode_text(tok, head + tail, max_len=None)
    n_head = len(encode_text(tok, head, max_len=None, eos=False))
    assert n_head > 300 and len(ids) < 512  # one window of the default size
    bad = set(ids[n_head:]) - set(ids[: n_head + 1]) - {tok.eos_token_id}
    n = len(ids) - 1
    wrong_at = [p for p in range(1, len(ids)) if ids[p] in bad]  # the token predicted at position p - 1
    assert bad and wrong_at and min(wrong_at) > 256
    model = _TargetScriptedLM(vocab, bad)
    docs = [Document("long", head + tail), Document("short", "Bo paints ships.")]
    for kw in ({}, {"window": 64}):  # one window; overlapping windows of 64 tokens
        long, short = doc_token_stats(model, tok, docs, batch_size=3, **kw)
        assert long["token_acc"] == pytest.approx((n - len(wrong_at)) / n)
        assert len(long["token_logprobs"]) == n
        k_star = max(wrong_at) + 1  # tokens of the prefix that greedy decoding needs
        assert long["extraction_strength"] == pytest.approx(1 - k_star / (n + 1))
        assert short["token_acc"] == 1.0


def test_generation_is_left_padded_and_new_tokens_only(tiny_model):
    model, tok = tiny_model
    prompts = ["Question: short?\nAnswer:", "Question: a much longer question with many words in it?\nAnswer:"]
    batched = generate_answers(model, tok, prompts, max_new_tokens=5, batch_size=2)
    single = [generate_answers(model, tok, [p], max_new_tokens=5)[0] for p in prompts]
    assert batched == single
    assert not any("Question" in g for g in batched)


def test_evaluate_split_items_reproduce_aggregates(tiny_model, tiny_data):
    model, tok = tiny_model
    s = evaluate_split(model, tok, tiny_data.forget[:4], batch_size=4)
    again = scores_from_items(s.items)
    assert again["score"] == pytest.approx(s.score)
    assert s.n_qa == sum(len(d.qa) for d in tiny_data.forget[:4])
    assert 0 <= s.probability <= 1 and not math.isnan(s.score)


def test_prepared_theta0_memorised_more_than_retain_only(tiny_prepared):
    import json

    rep = json.loads((tiny_prepared / "prepare.json").read_text())
    m = rep["models"]
    assert m["theta0"]["forget_token_acc"] > m["retain_only"]["forget_token_acc"] + 0.2
    ref = rep["reference"]
    assert ref["forget_0"] > ref["forget_T"]
