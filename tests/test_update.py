"""engine/update.py: the per-request update and its cache of frozen-reference outputs."""

from __future__ import annotations

import copy

import pytest
import torch

from fit_unlearn.engine.update import ReferenceCache, UpdateConfig, _forward, apply_update, slices
from fit_unlearn.errors import ConfigError
from fit_unlearn.objectives import resolve_objective
from fit_unlearn.strategies.base import UpdatePlan
from fit_unlearn.text import collate, doc_example


def _run(model, ref, tok, data, objective, cache_mb, ref_cache=None, doc=0, retain_batch_size=2):
    plan = UpdatePlan(text=data.forget[doc].text, objective=resolve_objective(objective), qa=data.forget[doc].qa[:2])
    cfg = UpdateConfig(lr=1e-3, epochs=3, reference_cache_mb=cache_mb, retain_batch_size=retain_batch_size)
    return apply_update(model, ref, tok, plan, data.retain, cfg, seed=5, ref_cache=ref_cache)


@pytest.mark.parametrize("objective", ["npo", "npo_kl", "rmu", "idk_dpo"])
def test_reference_cache_gives_the_same_update(tiny_model, tiny_data, objective):
    model, tok = tiny_model
    ref = copy.deepcopy(model).eval()
    a, b = copy.deepcopy(model), copy.deepcopy(model)
    # one retain document per batch: the cached and recomputed theta_0 outputs are the same computation,
    # so the whole update must be bit-identical (batch assembly is tested on its own below)
    rec_plain = _run(a, ref, tok, tiny_data, objective, cache_mb=0, retain_batch_size=1)
    rec_cached = _run(b, ref, tok, tiny_data, objective, cache_mb=64, retain_batch_size=1)
    assert "reference_cache" not in rec_plain
    assert rec_cached["reference_cache"]["hits"] > 0
    assert rec_cached["losses"] == rec_plain["losses"]
    for (n, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q), n
    # the update really moved the model: the comparison above is not between two untouched copies
    assert any(not torch.equal(p, q) for p, q in zip(a.parameters(), model.parameters(), strict=True))


def test_cached_batch_matches_a_batched_forward(tiny_model, tiny_data):
    """Sequences cached one by one and right-padded give the batched forward's outputs where it matters."""
    model, tok = tiny_model
    exs = [doc_example(tok, d.text, 512) for d in tiny_data.retain[:3]]
    assert len({len(e.ids) for e in exs}) > 1  # different lengths: padding is exercised
    batch = collate(exs, tok.pad_token_id)
    cache = ReferenceCache(64)
    for layer in (None, 1):
        want_logits, want_hidden = _forward(model, batch, layer, grad=False)
        got_logits, got_hidden = cache.outputs(
            model, exs, [("retain", i) for i in range(3)], tok.pad_token_id, "cpu", layer
        )
        mask = batch["attention_mask"].bool()
        assert got_logits.shape == want_logits.shape
        assert torch.allclose(got_logits[mask], want_logits[mask], atol=1e-5)
        assert (got_logits[~mask] == 0).all()
        if layer is not None:
            assert torch.allclose(got_hidden[mask], want_hidden[mask], atol=1e-5)
    assert cache.misses == 6 and len(cache) == 6  # keys include the hidden layer
    cache.outputs(model, exs, [("retain", i) for i in range(3)], tok.pad_token_id, "cpu", None)
    assert cache.hits == 3 and cache.misses == 6


def test_reference_cache_keeps_retain_outputs_across_requests(tiny_model, tiny_data):
    model, tok = tiny_model
    ref = copy.deepcopy(model).eval()
    cache = ReferenceCache(64)
    _run(model, ref, tok, tiny_data, "npo_kl", 64, ref_cache=cache, doc=0)
    retain_keys = {k for k in cache._store if k[0] in ("retain", "retain-qa")}
    assert retain_keys and len(cache) == len(retain_keys)  # forget slices dropped at the end of the request
    misses = cache.misses
    _run(model, ref, tok, tiny_data, "npo_kl", 64, ref_cache=cache, doc=1)
    # the second request computes theta_0 only on its own slices and on retain documents not seen before
    doc = tiny_data.forget[1]
    n_forget = len(slices(doc.text, UpdateConfig().slice_chars)) + len(doc.qa[:2])
    new_retain = {k for k in cache._store if k[0] in ("retain", "retain-qa")} - retain_keys
    assert cache.misses - misses == n_forget + len(new_retain)


def test_reference_cache_respects_its_budget(tiny_model, tiny_data):
    model, tok = tiny_model
    ref = copy.deepcopy(model).eval()
    cache = ReferenceCache(0)
    _run(model, ref, tok, tiny_data, "npo_kl", 0, ref_cache=cache)
    assert len(cache) == 0 and cache.used == 0 and cache.hits == 0


@pytest.mark.parametrize("match", [True, False])
def test_retain_batch_matches_the_kind_of_the_forget_step(tiny_model, tiny_data, match):
    """Steps that unlearn a QA pair are anchored on retain QA pairs (the same format), document steps on
    retain documents; with retain_match off, retain documents anchor every step."""
    model, tok = tiny_model
    ref = copy.deepcopy(model).eval()
    cache = ReferenceCache(64)
    doc = tiny_data.forget[0]
    assert doc.qa and all(d.qa for d in tiny_data.retain)
    plan = UpdatePlan(text=doc.text, objective=resolve_objective("npo_kl"), qa=doc.qa[:2])
    cfg = UpdateConfig(lr=1e-3, epochs=1, retain_match=match)
    apply_update(model, ref, tok, plan, tiny_data.retain, cfg, seed=5, ref_cache=cache)
    kinds = {k[0] for k in cache._store}
    assert "retain" in kinds  # the document step
    assert ("retain-qa" in kinds) == match
    # theta_0 ran once per forget item and once per distinct retain item (documents and QA pairs)
    n_forget = len(slices(doc.text, cfg.slice_chars)) + len(plan.qa)
    assert cache.misses == n_forget + len(cache)
    n_docs = sum(k[0] == "retain" for k in cache._store)
    assert n_docs == 2 if match else n_docs >= 2


@pytest.mark.parametrize("objective", ["idk", "idk_dpo"])
def test_alternate_shares_the_prompt_of_its_forget_example(tiny_model, tiny_data, monkeypatch, objective):
    """IdK / IdkDPO: the refusal of a step is built on the prompt of that step's forget example (the slice's
    first tokens, the QA pair's question), so DPO's preferred and rejected sequences answer the same prompt."""
    import fit_unlearn.engine.update as update
    from fit_unlearn.objectives import get_objective
    from fit_unlearn.text import IGNORE

    model, tok = tiny_model
    ref = copy.deepcopy(model).eval()
    calls = []
    real = update._outputs

    def spy(model, ref_model, examples, *args, keys=None, **kw):
        calls.append((keys[0][0], examples[0]))
        return real(model, ref_model, examples, *args, keys=keys, **kw)

    monkeypatch.setattr(update, "_outputs", spy)
    doc = tiny_data.forget[0]
    plan = UpdatePlan(text=doc.text, objective=resolve_objective(objective), qa=doc.qa[:2])
    cfg = UpdateConfig(lr=1e-3, epochs=1, slice_chars=100)
    rec = apply_update(model, ref, tok, plan, tiny_data.retain, cfg, seed=5)
    n_slices = len(slices(doc.text, 100))
    assert n_slices >= 2 and plan.qa and rec["steps"] == n_slices + len(plan.qa)
    calls = [c for c in calls if c[0] != "retain" and c[0] != "retain-qa"]
    assert [k for k, _ in calls] == ["forget", "alternate"] * rec["steps"]
    steps = [(f, a) for (_, f), (_, a) in zip(calls[::2], calls[1::2], strict=True)]
    refusals = get_objective(objective).make_config(None).refusals
    for i, (forget, alt) in enumerate(steps):
        n_prompt = next(j for j, label in enumerate(alt.labels) if label != IGNORE)
        assert n_prompt > 0
        assert alt.ids[:n_prompt] == forget.ids[:n_prompt], f"step {i}: the refusal answers another prompt"
        if i >= n_slices:  # a QA step: exactly the question prompt of the forget pair, masked in both
            assert forget.labels[:n_prompt] == [IGNORE] * n_prompt and forget.labels[n_prompt] != IGNORE
        else:  # a slice step: the slice's first 32 tokens
            assert n_prompt == min(32, len(forget.ids) - 1)
        assert tok.decode(alt.ids[n_prompt:], skip_special_tokens=True).strip() in refusals


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_saliency_changes_only_the_salient_weights(tiny_model, tiny_data, weight_decay):
    """update.saliency: the weights outside the mask stay bit-identical (weight decay included), the
    mask holds the requested fraction, and the salient weights did move."""
    from fit_unlearn.engine.update import forget_examples, saliency_masks

    model, tok = tiny_model
    ref = copy.deepcopy(model).eval()
    doc = tiny_data.forget[0]
    cfg = UpdateConfig(lr=1e-3, epochs=2, saliency=0.05, weight_decay=weight_decay)
    params = list(model.parameters())
    for p in params:
        p.requires_grad_(True)
    masks = saliency_masks(model, tok, params, forget_examples(tok, doc.text, doc.qa[:2], cfg)[1], 0.05)
    n = sum(p.numel() for p in params)
    assert sum(int(m.sum()) for m in masks) == pytest.approx(0.05 * n, rel=0.01)
    assert all(p.grad is None for p in params)  # the measurement leaves no gradient behind
    before = copy.deepcopy(model)
    plan = UpdatePlan(text=doc.text, objective=resolve_objective("graddiff"), qa=doc.qa[:2])
    rec = apply_update(model, ref, tok, plan, tiny_data.retain, cfg, seed=5)
    assert rec["weights_salient"] == sum(int(m.sum()) for m in masks)
    moved = unmoved = 0
    for p, q, m in zip(model.parameters(), before.parameters(), masks, strict=True):
        assert torch.equal(p[~m], q[~m])
        moved += int((p[m] != q[m]).sum())
        unmoved += int((~m).sum())
    assert moved > 0.5 * rec["weights_salient"] and unmoved > 0


def test_projection_removes_the_component_that_raises_the_retain_loss(tiny_model, tiny_data):
    """update.project_retain (A-GEM): after the projection the gradient no longer points against the retain
    batch's gradient (inner product >= 0, = 0 when it did), and a gradient that agreed with it is unchanged."""
    import random

    import torch.nn.functional as F

    from fit_unlearn.engine.update import _project_on_retain
    from fit_unlearn.text import IGNORE

    model, tok = tiny_model
    params = [p for p in model.parameters() if p.requires_grad]
    cfg = UpdateConfig(retain_batch_size=2, project_retain=True)

    def retain_grad(seed: int) -> list[torch.Tensor]:
        picked = random.Random(seed).sample(tiny_data.retain, 2)
        b = collate([doc_example(tok, d.text, cfg.max_len) for d in picked], tok.pad_token_id)
        logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits[:, :-1].float()
        labels = b["labels"][:, 1:].reshape(-1)
        F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels, ignore_index=IGNORE).backward()
        out = [p.grad.clone() for p in params]
        for p in params:
            p.grad = None
        return out

    def dot(a, b) -> float:
        return sum(float((x * y).sum()) for x, y in zip(a, b, strict=True))

    r = retain_grad(7)
    for sign in (-1.0, 1.0):  # a gradient that conflicts with the retain gradient, and one that agrees
        g = [sign * x + 0.1 * torch.randn_like(x) for x in r]
        for p, x in zip(params, g, strict=True):
            p.grad = x.clone()
        cos = _project_on_retain(model, tok, params, tiny_data.retain, random.Random(7), cfg, "cpu")
        got = [p.grad for p in params]
        assert (cos < 0) == (sign < 0)
        if sign < 0:
            assert dot(g, r) < 0
            assert abs(dot(got, r)) < 1e-4 * dot(r, r)  # the conflicting component is gone
        else:
            assert all(torch.equal(a, b) for a, b in zip(got, g, strict=True))  # nothing to remove
        for p in params:
            p.grad = None

    # an update with the projection records its steps and moves the model
    ref = copy.deepcopy(model).eval()
    doc = tiny_data.forget[0]
    plan = UpdatePlan(text=doc.text, objective=resolve_objective("ga"), qa=doc.qa[:2])
    rec = apply_update(model, ref, tok, plan, tiny_data.retain, UpdateConfig(lr=1e-3, epochs=1, project_retain=True), 5)
    assert len(rec["retain_cosine"]) == rec["steps"] > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device beside the CPU")
def test_reference_on_another_device_gives_the_same_outputs(tiny_model, tiny_data):
    """update.reference_device: theta_0 on the CPU while the model is on the GPU."""
    model, tok = tiny_model
    batch = collate([doc_example(tok, d.text, 512) for d in tiny_data.retain[:2]], tok.pad_token_id, "cuda")
    want, _ = _forward(copy.deepcopy(model).cuda(), batch, None, grad=False)
    got, _ = _forward(model.cpu(), batch, None, grad=False)
    assert got.device == batch["input_ids"].device and torch.allclose(got, want, atol=1e-4)


def _count_sequences(monkeypatch, update_mod, real_sums) -> list[int]:
    """Patch ``_loss_sums`` to note how many sequences each forward-only measurement runs; returns that list."""
    runs_of: list[int] = []
    monkeypatch.setattr(
        update_mod, "_loss_sums", lambda m, t, e, *a, **k: runs_of.append(len(e)) or real_sums(m, t, e, *a, **k)
    )
    return runs_of


def _own(tok, data, doc, max_df=0):
    from fit_unlearn.engine.rows import own_tokens, token_documents

    index = token_documents(tok, data.retain + data.holdout + data.forget)
    return own_tokens(tok, doc.id, doc.text, doc.qa[:2], index, max_df)[0]


def test_row_edit_moves_only_the_requests_own_rows_and_unties_the_output(tiny_tok, tiny_data, tmp_path):
    """update.trainable: rows on a tied model: the output layer keeps theta_0's matrix, only the request's own
    input rows move, every other weight is bit-identical, a document without those tokens gets bit-identical
    logits, the request's loss rises; the untied model saves and loads as it is."""
    from fit_unlearn.engine.update import examples_loss, forget_examples
    from fit_unlearn.models import build_tiny_llama, load_model, save_model

    tok = tiny_tok
    model = build_tiny_llama(tok, layers=2, hidden=64, seed=0, tied=True)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    ref = copy.deepcopy(model).eval()
    doc = tiny_data.forget[0]
    own = _own(tok, tiny_data, doc)
    cfg = UpdateConfig(epochs=3, trainable="rows")
    ex = forget_examples(tok, doc.text, doc.qa[:2], cfg)[1]
    before = examples_loss(model, tok, ex)
    plan = UpdatePlan(text=doc.text, objective=resolve_objective("ga"), qa=doc.qa[:2])
    rec = apply_update(model, ref, tok, plan, tiny_data.retain, cfg, seed=5, rows=own)
    assert rec["rows"]["edited"] and rec["rows"]["tokens"] == own
    assert rec["params_touched"] == len(own) * 64
    assert model.lm_head.weight is not model.model.embed_tokens.weight and not model.config.tie_word_embeddings
    theta0 = ref.model.embed_tokens.weight
    assert torch.equal(model.lm_head.weight, theta0)
    moved = (model.model.embed_tokens.weight != theta0).any(dim=1)
    assert moved.nonzero().flatten().tolist() == own
    new, old = dict(model.named_parameters()), dict(ref.named_parameters())
    assert all(torch.equal(new[n], old[n]) for n in old if "embed_tokens" not in n)
    assert examples_loss(model, tok, ex) > before  # a random-init model knows nothing: any rise will do
    other = next(d for d in tiny_data.retain if not set(own) & set(tok(d.text)["input_ids"]))
    b = collate([doc_example(tok, other.text)], tok.pad_token_id)
    with torch.no_grad():
        assert torch.equal(model(input_ids=b["input_ids"]).logits, ref(input_ids=b["input_ids"]).logits)
    loaded, _ = load_model(save_model(model, tok, tmp_path / "m"))
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=b["input_ids"]).logits, model(input_ids=b["input_ids"]).logits)
    assert torch.equal(loaded.lm_head.weight, theta0)


@pytest.mark.parametrize(
    "objective,more",
    [("ga", {}), ("graddiff", {"max_grad_norm": 0.05, "retain_batch_size": 1})],
)
def test_row_edits_train_the_rows_alone_as_the_masked_matrix_would(tiny_tok, tiny_data, monkeypatch, objective, more):
    """The request's rows trained as a tensor of their own (``EditedRows``, read through a forward hook) give
    bit-identical weights, losses and stop to the masked update of the whole embedding matrix (CPU, fp32; with a
    retain term and clipping too), with the closed loop measuring the request while the hook is on; the hook is gone
    afterwards, and an edited padding row takes the masked path."""
    from fit_unlearn.engine import rows as rows_mod
    from fit_unlearn.engine.update import StopRule, examples_loss, forget_examples
    from fit_unlearn.models import build_tiny_llama

    tok = tiny_tok
    doc = tiny_data.forget[0]
    own = _own(tok, tiny_data, doc, max_df=4)  # 14 rows
    cfg = UpdateConfig(trainable="rows", rows={"lr": 2e-1}, **more)
    plan = UpdatePlan(text=doc.text, objective=resolve_objective(objective), qa=doc.qa[:2])
    attached, attach, real = [], rows_mod.EditedRows.attach, rows_mod.EditedRows.supports
    monkeypatch.setattr(rows_mod.EditedRows, "attach", lambda self: attached.append(1) or attach(self))
    runs = []
    for fast in (True, False):
        supports = real if fast else lambda emb, rows: False
        monkeypatch.setattr(rows_mod.EditedRows, "supports", staticmethod(supports))
        model = build_tiny_llama(tok, layers=2, hidden=64, seed=0, tied=True)
        ref = copy.deepcopy(model).eval()
        ex = forget_examples(tok, doc.text, doc.qa[:2], cfg)[1]
        target = examples_loss(model, tok, ex) + 0.05
        rec = apply_update(
            model, ref, tok, plan, tiny_data.retain, cfg, seed=5, rows=own, stop=StopRule(target, 30, check_every=2)
        )
        assert not model.model.embed_tokens._forward_hooks
        runs.append((rec, model.model.embed_tokens.weight.detach().clone()))
    assert attached == [1]  # the first run took the fast path, the second the masked matrix
    (fast_rec, fast_w), (slow_rec, slow_w) = runs
    assert fast_rec["loop"]["stopped"] == "target" and 2 <= fast_rec["steps"] < 30
    assert fast_rec["losses"] == slow_rec["losses"] and fast_rec["loop"] == slow_rec["loop"]
    assert torch.equal(fast_w, slow_w)
    assert (fast_w != build_tiny_llama(tok, layers=2, hidden=64, seed=0).model.embed_tokens.weight).any(1).sum() == len(
        own
    )
    emb = build_tiny_llama(tok, layers=2, hidden=64, seed=0).model.embed_tokens
    assert real(emb, own) and not real(emb, own + [emb.padding_idx])


def test_row_edits_on_both_sides_shrink_the_own_rows_of_the_output_layer(tiny_tok, tiny_data, monkeypatch):
    """rows.side both: the own tokens' input rows move and their output rows are theta_0's scaled by a factor in
    [0, 1] (the receipt's), nothing else moves; a sequence without those tokens keeps every other token's logit
    bit-identical and no edited token's logit rises above max(theta_0's, 0); the request's loss rises further than
    the input-only edit's; the masked input matrix takes the same steps to within rounding; the hooks are gone."""
    from fit_unlearn.engine import rows as rows_mod
    from fit_unlearn.engine.update import examples_loss, forget_examples
    from fit_unlearn.models import build_tiny_llama

    tok = tiny_tok
    doc = tiny_data.forget[0]
    own = _own(tok, tiny_data, doc, max_df=4)
    plan = UpdatePlan(text=doc.text, objective=resolve_objective("ga"), qa=doc.qa[:2])
    other = next(d for d in tiny_data.retain if not set(own) & set(tok(d.text)["input_ids"]))
    b = collate([doc_example(tok, other.text)], tok.pad_token_id)
    keep = torch.ones(len(tok), dtype=torch.bool)
    keep[own] = False
    out = {}
    for side, fast in (("input", True), ("both", True), ("both", False)):
        if not fast:
            monkeypatch.setattr(rows_mod.EditedRows, "supports", staticmethod(lambda emb, rows: False))
        cfg = UpdateConfig(epochs=2, trainable="rows", rows={"lr": 1e-1, "side": side})
        model = build_tiny_llama(tok, layers=2, hidden=64, seed=0, tied=True)
        ref = copy.deepcopy(model).eval()
        ex = forget_examples(tok, doc.text, doc.qa[:2], cfg)[1]
        before = examples_loss(model, tok, ex)
        rec = apply_update(model, ref, tok, plan, tiny_data.retain, cfg, seed=5, rows=own)
        assert not model.model.embed_tokens._forward_hooks and not model.lm_head._forward_hooks
        theta0 = ref.model.embed_tokens.weight
        assert (model.model.embed_tokens.weight != theta0).any(1).nonzero().flatten().tolist() == own
        moved_out = (model.lm_head.weight != theta0).any(1).nonzero().flatten().tolist()
        assert rec["params_touched"] == len(own) * (65 if side == "both" else 64)
        if side == "both":
            scale = torch.tensor(rec["rows"]["output_scale"])
            assert rec["rows"]["side"] == "both" and len(scale) == len(own) and ((scale >= 0) & (scale <= 1)).all()
            assert moved_out and set(moved_out) <= set(own) and (scale < 1).sum() == len(moved_out)
            assert torch.allclose(model.lm_head.weight[own], theta0[own] * scale[:, None], atol=1e-4)
        else:
            assert moved_out == [] and "side" not in rec["rows"]
        new, old = dict(model.named_parameters()), dict(ref.named_parameters())
        assert all(torch.equal(new[n], old[n]) for n in old if "embed_tokens" not in n and "lm_head" not in n)
        with torch.no_grad():
            a, r = model(input_ids=b["input_ids"]).logits, ref(input_ids=b["input_ids"]).logits
        assert torch.equal(a[..., keep], r[..., keep])
        assert torch.equal(a[..., own], r[..., own]) == (side == "input")
        assert (a[..., own] <= r[..., own].clamp(min=0) + 1e-5).all()
        rise = examples_loss(model, tok, ex) - before
        out[(side, fast)] = (rise, rec["steps"], model.lm_head.weight.detach().clone())
    assert out[("both", True)][0] > out[("input", True)][0] > 0
    assert out[("both", True)][1] == out[("both", False)][1]
    assert torch.allclose(out[("both", True)][2], out[("both", False)][2], atol=1e-5)


def test_row_edits_on_both_sides_refuse_an_output_layer_the_hook_cannot_read():
    from fit_unlearn.engine.rows import EditedOutputRows

    EditedOutputRows.require(torch.nn.Linear(4, 8, bias=False))
    with pytest.raises(ConfigError, match="rows.side both needs a plain output layer without bias"):
        EditedOutputRows.require(torch.nn.Linear(4, 8, bias=True))


def test_a_request_without_enough_own_tokens_is_updated_as_full(tiny_model, tiny_data):
    model, tok = tiny_model
    ref = copy.deepcopy(model).eval()
    doc = tiny_data.forget[0]
    # fallback rarest: whatever rows the request has are edited (own_tokens widened them already)
    rarest = UpdateConfig(lr=1e-3, epochs=1, trainable="rows", rows={"min_rows": 10_000})
    plan = UpdatePlan(text=doc.text, objective=resolve_objective("ga"), qa=doc.qa[:1])
    m2 = copy.deepcopy(model)
    assert apply_update(m2, ref, tok, plan, tiny_data.retain, rarest, seed=5, rows=_own(tok, tiny_data, doc))["rows"][
        "edited"
    ]
    cfg = UpdateConfig(lr=1e-3, epochs=1, trainable="rows", rows={"min_rows": 10_000, "fallback": "full"})
    plan = UpdatePlan(text=doc.text, objective=resolve_objective("ga"), qa=doc.qa[:1])
    rec = apply_update(model, ref, tok, plan, tiny_data.retain, cfg, seed=5, rows=_own(tok, tiny_data, doc))
    assert not rec["rows"]["edited"]
    assert rec["params_touched"] == sum(p.numel() for p in model.parameters())
    layer = "model.layers.0.mlp.down_proj.weight"
    assert not torch.equal(dict(model.named_parameters())[layer], dict(ref.named_parameters())[layer])


def test_rows_refuse_saliency():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="drop update.saliency"):
        UpdateConfig(trainable="rows", saliency=0.1)


@pytest.mark.parametrize(
    "trainable,objective,lr,margin,budget,every",
    [
        ("rows", "ga", 2e-1, 0.13, 30, 3),  # stops at the target at a check read off the next step's forward
        ("full", "npo", 1e-3, 0.6, 30, 3),  # a reference model and its cache: asked for only once a step goes on
        ("full", "graddiff", 1e-3, 0.6, 30, 1),  # retain batches drawn (a stop must not draw one), a check every step
        ("rows", "ga", 2e-1, 50.0, 9, 3),  # never reaches it: the checks, the last one after the final step
    ],
)
def test_a_check_read_off_the_next_steps_forward_stops_where_a_separate_check_would(
    tiny_tok, tiny_data, monkeypatch, trainable, objective, lr, margin, budget, every
):
    """The closed loop's check after a step, read off the next step's forward of its sequence (the others run
    again), stops at the same step as a separate forward over all the request's sequences: bit-identical losses,
    weights, stop reason, retain draws and reference-cache use, the same measured loss up to rounding, and each
    such check runs every sequence but the one the step reads."""
    from fit_unlearn.engine import update as update_mod
    from fit_unlearn.engine.update import StopRule, examples_loss, forget_examples
    from fit_unlearn.models import build_tiny_llama

    tok, doc = tiny_tok, tiny_data.forget[0]
    cfg = UpdateConfig(lr=lr, trainable=trainable, rows={"lr": lr}, slice_chars=80)  # 4 sequences: 3 slices, 1 QA
    plan = UpdatePlan(text=doc.text, objective=resolve_objective(objective), qa=doc.qa[:2])
    own = _own(tok, tiny_data, doc, max_df=4) if trainable == "rows" else None
    real_sums = update_mod._loss_sums
    runs = []
    for fused in (True, False):
        monkeypatch.setattr(update_mod, "deterministic_in_training", lambda m, fused=fused: fused)
        runs_of = _count_sequences(monkeypatch, update_mod, real_sums)
        model = build_tiny_llama(tok, layers=2, hidden=64, seed=0)
        ref = copy.deepcopy(model).eval()
        ex = forget_examples(tok, doc.text, doc.qa[:2], cfg)[1]
        assert len(ex) == 4
        target = examples_loss(model, tok, ex) + margin
        runs_of.clear()
        rec = apply_update(
            model, ref, tok, plan, tiny_data.retain, cfg, seed=5, rows=own, stop=StopRule(target, budget, every)
        )
        runs.append((rec, [p.detach().clone() for p in model.parameters()], runs_of))
    (a, wa, ra), (b, wb, rb) = runs
    want = "target" if margin < 10 else "budget"
    assert a["loop"]["stopped"] == b["loop"]["stopped"] == want
    assert every < a["steps"] and a["steps"] % every == 0
    assert a["steps"] < budget if want == "target" else a["steps"] == budget
    assert a["losses"] == b["losses"] and a["retain_drawn"] == b["retain_drawn"]
    assert a.get("reference_cache") == b.get("reference_cache")
    assert all(torch.equal(p, q) for p, q in zip(wa, wb, strict=True))
    assert a["loop"]["loss_after"] == pytest.approx(b["loop"]["loss_after"], rel=1e-5)
    assert a["loop"]["loss_after"] > a["loop"]["loss_before"]
    checks = a["steps"] // every  # the loss before the first step, then one measurement per check
    final = [] if want == "target" else [4]  # the check after the budget's last step runs all 4
    assert rb == [4] * (1 + checks)
    assert ra == [4] + [3] * (checks - len(final)) + final


def test_the_next_check_falls_a_fraction_of_the_way_to_where_the_line_through_two_measures_meets_the_target():
    from fit_unlearn.engine.update import StopRule, next_check

    ahead = StopRule(target=10.0, max_steps=40, check_every=2, check_ahead=0.5)
    # 0.25 nats a step, 6 to go: the line meets the target 24 steps on, half of it is 12, the next check 12 on
    assert next_check(ahead, 8, 4.0, 0, 2.0) == 20
    assert next_check(ahead, 8, 4.0, 4, 3.0) == 16  # the same, after an interval of 4: at most 8 on
    # 0.5 nats a step, 7 to go: half the way is 7 steps, but never more than twice the last interval (2)
    assert next_check(ahead, 2, 3.0, 0, 2.0) == 6
    assert next_check(ahead, 8, 9.5, 6, 9.0) == 10  # 2 steps to go: a check is never sooner than check_every
    assert next_check(ahead, 4, 3.0, 2, 3.5) == 6  # the loss fell: nothing to extrapolate
    assert next_check(ahead, 2, 3.0, None, None) == 4  # the first measure alone
    assert next_check(StopRule(target=10.0, max_steps=40, check_every=2), 8, 4.0, 4, 3.0) == 10  # every check_every


def test_a_request_stalls_when_its_loss_rose_less_than_the_rise_over_the_window():
    from fit_unlearn.engine.update import StopRule, stalled

    stop = StopRule(target=5.0, max_steps=40, check_every=2, stall_steps=6, stall_rise=0.25)  # exact in binary
    rising = [[0, 1.0], [2, 2.0], [4, 2.5], [6, 2.5], [8, 2.75]]
    assert not stalled(stop, rising)  # 0.75 over the 6 steps since step 2
    assert stalled(stop, [*rising, [10, 2.625]])  # 0.125 since step 4
    assert not stalled(stop, [*rising, [10, 2.75]])  # 0.25: not less than the rise
    assert not stalled(stop, [[0, 1.0], [2, 1.0], [4, 1.0]])  # no measure 6 steps back yet
    assert not stalled(StopRule(target=5.0, max_steps=40), [*rising, [10, 2.625]])  # no window: never


def test_a_stalled_request_stops_where_the_budget_run_had_reached_and_records_why(tiny_tok, tiny_data):
    """Row edits on the tiny model level off about 0.16 nats above where they start: with a target out of reach the
    request spends its budget, unless a stall window stops it, at the same weights the budget run had then."""
    from fit_unlearn.engine.update import StopRule, examples_loss, forget_examples
    from fit_unlearn.models import build_tiny_llama

    tok, doc = tiny_tok, tiny_data.forget[0]
    cfg = UpdateConfig(trainable="rows", rows={"lr": 5e-2}, slice_chars=80)
    plan = UpdatePlan(text=doc.text, objective=resolve_objective("ga"), qa=doc.qa[:2])
    own = _own(tok, tiny_data, doc, max_df=4)
    recs = []
    for window in (None, 6):
        model = build_tiny_llama(tok, layers=2, hidden=64, seed=0)
        ex = forget_examples(tok, doc.text, doc.qa[:2], cfg)[1]
        stop = StopRule(examples_loss(model, tok, ex) + 1.0, 40, 2, stall_steps=window, stall_rise=0.01)
        recs.append(apply_update(model, None, tok, plan, [], cfg, seed=5, rows=own, stop=stop))
    spent, cut = recs
    assert (spent["loop"]["stopped"], spent["steps"]) == ("budget", 40)
    assert cut["loop"]["stopped"] == "stalled" and 6 <= cut["steps"] < 30
    assert cut["losses"] == spent["losses"][: cut["steps"]]  # the same steps, stopped early
    assert cut["loop"]["measured"] == spent["loop"]["measured"][: len(cut["loop"]["measured"])]
    m = cut["loop"]["measured"]  # a check every 2 steps: the window reaches 3 checks back
    assert m[-1][0] - m[-4][0] == 6 and m[-1][1] - m[-4][1] < 0.01 <= m[-2][1] - m[-5][1]


@pytest.mark.parametrize("fused", [True, False])
def test_checks_spaced_by_the_loss_s_progress_measure_less_and_stop_past_the_target(
    tiny_tok, tiny_data, monkeypatch, fused
):
    """``check_ahead``: the same request to the same target takes fewer measurements than a check after every step,
    each at the step the last two measures schedule, and still stops only once its loss reaches the target; every
    measurement the record lists ran (the loss before, then each check: the first after ``check_every`` steps)."""
    from fit_unlearn.engine import update as update_mod
    from fit_unlearn.engine.update import StopRule, examples_loss, forget_examples, next_check
    from fit_unlearn.models import build_tiny_llama

    monkeypatch.setattr(update_mod, "deterministic_in_training", lambda m: fused)
    tok, doc = tiny_tok, tiny_data.forget[0]
    cfg = UpdateConfig(lr=1e-3, slice_chars=80)  # every weight: GA's loss climbs steadily on the tiny model
    plan = UpdatePlan(text=doc.text, objective=resolve_objective("ga"), qa=doc.qa[:2])
    real_sums = update_mod._loss_sums
    recs = {}
    for ahead in (None, 0.5):
        runs_of = _count_sequences(monkeypatch, update_mod, real_sums)
        model = build_tiny_llama(tok, layers=2, hidden=64, seed=0)
        ex = forget_examples(tok, doc.text, doc.qa[:2], cfg)[1]
        stop = StopRule(examples_loss(model, tok, ex) + 0.8, 60, 1, check_ahead=ahead)
        runs_of.clear()
        rec = apply_update(model, None, tok, plan, [], cfg, seed=5, stop=stop)
        loop = rec["loop"]
        assert loop["stopped"] == "target" and loop["loss_after"] >= loop["target"]
        m = loop["measured"]
        assert m[0] == [0, loop["loss_before"]] and m[-1] == [rec["steps"], loop["loss_after"]]
        assert len(runs_of) == len(m)  # each listed measure ran once, and nothing else did
        for (s0, l0), (s1, l1), (s2, _) in zip(m, m[1:], m[2:], strict=False):
            assert s2 == next_check(stop, s1, l1, s0, l0)
        recs[ahead] = rec
    every, spaced = recs[None]["loop"]["measured"], recs[0.5]["loop"]["measured"]
    assert [s for s, _ in every] == list(range(recs[None]["steps"] + 1))
    assert len(spaced) < len(every) - 2 and spaced[1][0] == 1
    assert recs[0.5]["steps"] >= recs[None]["steps"]  # a check every step stops at the first step past the target


def test_a_forward_is_deterministic_in_training_only_without_dropout(tiny_tok):
    from peft import LoraConfig, get_peft_model

    from fit_unlearn.engine.update import deterministic_in_training
    from fit_unlearn.models import build_tiny_llama

    model = build_tiny_llama(tiny_tok, layers=1, hidden=32, seed=0)
    assert deterministic_in_training(model)
    model.config.attention_dropout = 0.1
    assert not deterministic_in_training(model)
    model.config.attention_dropout = 0.0
    model.config.router_jitter_noise = 0.01  # a draw in training that no module holds
    assert not deterministic_in_training(model)
    model.config.router_jitter_noise = 0.0
    assert deterministic_in_training(model)
    with_lora = get_peft_model(copy.deepcopy(model), LoraConfig(r=2, target_modules=["q_proj"], lora_dropout=0.1))
    assert not deterministic_in_training(with_lora.base_model.model)
    model.model.layers[0].mlp.add_module("drop", torch.nn.Dropout(0.1))
    assert not deterministic_in_training(model)


def test_the_record_measures_the_final_weights_when_the_budget_ends_between_checks(tiny_tok, tiny_data):
    """A budget of 7 steps with a check every 3: the last check saw step 6, so the record measures step 7's weights."""
    from fit_unlearn.engine.update import StopRule, examples_loss, forget_examples
    from fit_unlearn.models import build_tiny_llama

    tok, doc = tiny_tok, tiny_data.forget[0]
    cfg = UpdateConfig(trainable="rows", rows={"lr": 2e-1}, slice_chars=80)
    model = build_tiny_llama(tok, layers=2, hidden=64, seed=0)
    ex = forget_examples(tok, doc.text, doc.qa[:2], cfg)[1]
    plan = UpdatePlan(text=doc.text, objective=resolve_objective("ga"), qa=doc.qa[:2])
    own = _own(tok, tiny_data, doc, max_df=4)
    rec = apply_update(model, None, tok, plan, [], cfg, seed=5, rows=own, stop=StopRule(1e9, 7, 3))
    assert (rec["steps"], rec["loop"]["stopped"]) == (7, "budget")
    assert rec["loop"]["loss_after"] == examples_loss(model, tok, ex)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("trainable,objective,lr,margin", [("rows", "ga", 2e-1, 0.13), ("full", "npo", 1e-3, 0.6)])
def test_on_cuda_a_check_read_off_the_next_steps_forward_stops_where_a_separate_check_would(
    tiny_tok, tiny_data, monkeypatch, dtype, trainable, objective, lr, margin
):
    """On a GPU the check read off the training forward (one sequence in a batch of its own) and the separate check
    (every sequence in one padded batch) run different kernels, so they agree up to rounding, not bit for bit: the
    same stop, the same number of steps, and losses and weights that agree to the dtype's precision."""
    from fit_unlearn.engine import update as update_mod
    from fit_unlearn.engine.update import StopRule, examples_loss, forget_examples
    from fit_unlearn.models import build_tiny_llama

    tok, doc = tiny_tok, tiny_data.forget[0]
    cfg = UpdateConfig(lr=lr, trainable=trainable, rows={"lr": lr}, slice_chars=80)
    plan = UpdatePlan(text=doc.text, objective=resolve_objective(objective), qa=doc.qa[:2])
    own = _own(tok, tiny_data, doc, max_df=4) if trainable == "rows" else None
    real_sums = update_mod._loss_sums
    runs = []
    for fused in (True, False):
        monkeypatch.setattr(update_mod, "deterministic_in_training", lambda m, fused=fused: fused)
        runs_of = _count_sequences(monkeypatch, update_mod, real_sums)
        model = build_tiny_llama(tok, layers=2, hidden=64, seed=0).to("cuda", dtype)
        ref = copy.deepcopy(model).eval()
        ex = forget_examples(tok, doc.text, doc.qa[:2], cfg)[1]
        target = examples_loss(model, tok, ex) + margin
        runs_of.clear()
        rec = apply_update(model, ref, tok, plan, tiny_data.retain, cfg, seed=5, rows=own, stop=StopRule(target, 30, 3))
        runs.append((rec, [p.detach().float().cpu() for p in model.parameters()], runs_of))
    (a, wa, ra), (b, wb, rb) = runs
    assert 3 in ra and 3 not in rb  # the first run read its checks off the training forward, the second did not
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    assert a["loop"]["stopped"] == b["loop"]["stopped"] == "target"
    assert a["steps"] == b["steps"] < 30
    assert a["losses"] == pytest.approx(b["losses"], rel=tol, abs=tol)
    assert a["loop"]["loss_after"] == pytest.approx(b["loop"]["loss_after"], rel=tol)
    assert all(torch.allclose(p, q, rtol=tol, atol=tol) for p, q in zip(wa, wb, strict=True))


def test_a_normalized_row_step_moves_the_rows_by_the_learning_rate_along_their_gradient(tiny_tok, tiny_data):
    """update.rows.step: normalized: one step moves the request's rows, all together, by exactly rows.lr (L2),
    along the gradient of the request's loss with respect to those rows; AdamW moves them by far more."""
    from fit_unlearn.models import build_tiny_llama

    tok, doc = tiny_tok, tiny_data.forget[0]
    own = _own(tok, tiny_data, doc)
    plan = UpdatePlan(text=doc.text, objective=resolve_objective("ga"), qa=())
    moved = {}
    for step in ("normalized", "adam"):
        model = build_tiny_llama(tok, layers=2, hidden=64, seed=0)
        ref = copy.deepcopy(model).eval()
        cfg = UpdateConfig(
            epochs=1,
            trainable="rows",
            warmup_ratio=0.0,
            min_lr_ratio=1.0,
            weight_decay=0.0,
            rows={"lr": 0.05, "step": step},
        )
        b = collate([doc_example(tok, doc.text, cfg.max_len)], tok.pad_token_id)
        emb = model.get_input_embeddings().weight
        emb.requires_grad_(True)
        out = model(input_ids=b["input_ids"], labels=b["labels"])
        out.loss.backward()  # ascent steps along the gradient of the loss itself
        grad = emb.grad[own].clone()
        emb.grad = None
        emb.requires_grad_(False)
        rec = apply_update(model, ref, tok, plan, tiny_data.retain, cfg, seed=5, rows=own)
        assert rec["steps"] == 1
        delta = (model.get_input_embeddings().weight - ref.get_input_embeddings().weight)[own]
        moved[step] = float(delta.norm())
        if step == "normalized":
            cos = torch.nn.functional.cosine_similarity(delta.flatten(), grad.flatten(), dim=0)
            assert moved[step] == pytest.approx(0.05, rel=1e-4) and float(cos) > 0.9999
    assert moved["adam"] > 5 * moved["normalized"]
