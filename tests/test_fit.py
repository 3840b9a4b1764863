"""FIT's three mechanisms, its receipts and ablations, on tiny models."""

import pytest
import torch
from pydantic import ValidationError

from fit_unlearn.errors import ConfigError, ModelError
from fit_unlearn.layers import decoder_layers, layer_param_names
from fit_unlearn.strategies.fit.attribution import LayerAttribution, LayerConfig
from fit_unlearn.strategies.fit.filter import FilterConfig, RedundancyFilter, chunk
from fit_unlearn.strategies.fit.importance import ImportanceConfig, ImportanceSelector, importance
from fit_unlearn.strategies.fit.strategy import FitStrategy

TEXT = "Name: Ada Q. Vell\n\nAge: 33\n\nDescription: Ada repairs clocks. She also sings."


def test_chunking_units(tiny_tok):
    spans = chunk(TEXT, "chars", 8)
    assert "".join(TEXT[a:b] for a, b in spans) == TEXT
    assert [b - a for a, b in spans] == [8] * 9 + [4]  # 76 characters
    # tokens: consecutive groups of 4 tokens of the text's own tokenisation, together the whole text
    offsets = tiny_tok(TEXT, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    tspans = chunk(TEXT, "tokens", 4, tiny_tok)
    assert "".join(TEXT[a:b] for a, b in tspans) == TEXT
    per_chunk = [sum(a <= s and e <= b for s, e in offsets) for a, b in tspans]
    assert per_chunk == [4] * (len(offsets) // 4) + ([len(offsets) % 4] if len(offsets) % 4 else [])
    prose = "Age: 33\n\nAda repairs clocks. She also sings! Does she? Yes."
    sents = [prose[a:b].strip() for a, b in chunk(prose, "sentences", 1)]
    assert sents == ["Age: 33", "Ada repairs clocks.", "She also sings!", "Does she?", "Yes."]
    pairs = [prose[a:b].strip() for a, b in chunk(prose, "sentences", 2)]
    assert pairs == ["Age: 33\n\nAda repairs clocks.", "She also sings! Does she?", "Yes."]
    assert [TEXT[a:b].strip() for a, b in chunk(TEXT, "sentences", 1)][-1] == "She also sings."
    with pytest.raises(ValidationError, match="unit"):
        FilterConfig(unit="words")


@pytest.fixture(scope="module")
def encoder_filter():
    return RedundancyFilter(FilterConfig(size=8, tau=0.9, eps=0.2))


def test_filter_keeps_all_with_empty_memory_then_drops_repeats(encoder_filter, tiny_model):
    model, tok = tiny_model
    f = RedundancyFilter(FilterConfig(size=8, tau=0.9, eps=100.0))  # any loss change counts as "no change"
    f._encoder = encoder_filter.encoder
    kept, rec = f.filter(TEXT, model, tok)
    assert kept == TEXT and rec["candidates"] == 0 and rec["kept_fraction"] == 1.0
    assert rec["chars"] == rec["kept_chars"] == len(TEXT.strip())
    f.commit()
    assert f.size == rec["chunks"]
    kept, rec = f.filter(TEXT, model, tok)  # the same request again: every chunk has s* = 1
    assert rec["candidates"] == rec["chunks"] and kept == "" and len(rec["dropped"]) == rec["chunks"]
    assert (rec["chars"], rec["kept_chars"]) == (len(TEXT.strip()), 0)  # the whole text dropped
    assert all(d["s_star"] == pytest.approx(1.0, abs=1e-5) for d in rec["dropped"])


def test_filter_keeps_candidates_that_change_the_loss(encoder_filter, tiny_model):
    model, tok = tiny_model
    f = RedundancyFilter(FilterConfig(size=8, tau=0.9, eps=0.0))  # eps 0: any loss change keeps the chunk
    f._encoder = encoder_filter.encoder
    f.filter(TEXT, model, tok)
    f.commit()
    kept, rec = f.filter(TEXT, model, tok)
    assert rec["candidates"] == rec["chunks"]
    assert kept == TEXT  # removing any chunk changes CE by > 0


def test_token_chunks_keep_the_whitespace_between_them(encoder_filter, tiny_model):
    """Tokenizers that trim offsets (GPT-2, SmolLM: a token's span leaves out its leading space) leave gaps
    between token groups; the chunks must still cover the text, so kept chunks re-join into it."""
    from tokenizers import processors

    model, tok = tiny_model
    tok.backend_tokenizer.post_processor = processors.ByteLevel(trim_offsets=True)
    offsets = tok(TEXT, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    assert any(s > e for (_, e), (s, _) in zip(offsets, offsets[1:], strict=False))  # gaps between tokens
    for size in (4, 1):  # size 1: the "\n\n" tokens are blank chunks, left out of the chunks, not of the text
        f = RedundancyFilter(FilterConfig(unit="tokens", size=size, eps=100.0))
        f._encoder = encoder_filter.encoder
        kept, rec = f.filter("  " + TEXT + "\n", model, tok)
        assert rec["candidates"] == 0 and rec["kept"] == rec["chunks"]
        assert kept == TEXT
    assert "".join(TEXT[a:b] for a, b in chunk(TEXT, "tokens", 4, tok)) == TEXT
    assert all(TEXT[a:b].strip() for a, b in chunk(TEXT, "tokens", 1, tok))


#: a request of about 1,000 tokens: its chunks past token 512 must be scored like the others
LONG = "\n\n".join(f"Entry {i}. " + TEXT for i in range(36))


def _token_starts(tok, text):
    return [s for s, _ in tok(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]]


def test_filter_tests_candidates_past_token_512(encoder_filter, tiny_model):
    """A candidate chunk beyond the first 512 tokens changes the loss of the whole request like any other: it
    is tested (eps 0 keeps every chunk whose removal changes CE) instead of getting dL = 0 and being dropped."""
    model, tok = tiny_model
    starts = _token_starts(tok, LONG)
    assert len(starts) > 900 and len(LONG) <= 20_000  # within stream.max_request_chars
    f = RedundancyFilter(FilterConfig(size=64, tau=0.9, eps=0.0))
    f._encoder = encoder_filter.encoder
    f.filter(LONG, model, tok)
    f.commit()
    kept, rec = f.filter(LONG, model, tok)
    spans = chunk(LONG, "chars", 64)
    assert rec["candidates"] == rec["chunks"] == len(spans)
    assert sum(a >= starts[512] for a, _ in spans) > 10  # many candidates lie past token 512
    assert rec["dropped"] == [] and kept == LONG


def test_importance_scores_the_whole_request(tiny_model):
    """The tail of a request past token 512 counts in its importance (scored in windows of max_len tokens);
    a request of at most max_len tokens is one window, the plain gradient norm."""
    model, tok = tiny_model
    tail_a = LONG + "\n\nDescription: Bo paints ships in the harbour."
    tail_b = LONG + "\n\nAge: 91. Zed sells old maps."
    assert len(_token_starts(tok, LONG)) > 900
    i_a, i_b = importance(tail_a, model, tok), importance(tail_b, model, tok)
    assert i_a > 0 and i_b > 0 and all(p.grad is None for p in model.parameters())
    assert i_a != pytest.approx(i_b, rel=1e-3)
    # one window of 4,096 tokens holds the whole request: the gradient norm of one normal forward over all of it
    assert importance(tail_a, model, tok, max_len=4096) == pytest.approx(
        _embedding_grad_norm(model, tok, tail_a, max_len=4096), rel=1e-4
    )


def test_filter_memory_roundtrip(encoder_filter, tiny_model, tmp_path):
    model, tok = tiny_model
    f = RedundancyFilter(FilterConfig())
    f._encoder = encoder_filter.encoder
    f.filter(TEXT, model, tok)
    f.commit()
    f.save(tmp_path)
    g = RedundancyFilter(FilterConfig())
    g._encoder = encoder_filter.encoder
    g.load(tmp_path)
    q = f.embed(["Age: 33", "something else"])
    assert torch.equal(torch.tensor(f.index.search(q, 3)[0]), torch.tensor(g.index.search(q, 3)[0]))


def test_approximate_index_beyond_threshold(encoder_filter, tiny_model):
    import faiss

    model, tok = tiny_model
    f = RedundancyFilter(FilterConfig(approx_threshold=5))
    f._encoder = encoder_filter.encoder
    f.filter(TEXT, model, tok)
    f.commit()
    assert isinstance(f.index, faiss.IndexHNSWFlat)
    kept, rec = f.filter(TEXT, model, tok)
    assert rec["candidates"] > 0


def test_layer_skip_hook_equals_zeroed_block(tiny_model):
    model, tok = tiny_model
    att = LayerAttribution(LayerConfig(k=1))
    scores = att.scores(TEXT, model, tok)
    assert len(scores) == 3 and all(s >= 0 for s in scores)
    from fit_unlearn.text import collate, doc_example

    b = collate([doc_example(tok, TEXT, 128)], tok.pad_token_id)
    with torch.no_grad():
        l0 = model(**b).loss.item()
        layer = model.model.layers[1]
        saved = {n: p.clone() for n, p in layer.named_parameters()}
        layer.self_attn.o_proj.weight.zero_()
        layer.mlp.down_proj.weight.zero_()
        l1 = model(**b).loss.item()
        for n, p in layer.named_parameters():
            p.copy_(saved[n])
    assert scores[1] == pytest.approx(abs(l1 - l0), abs=1e-5)
    chosen, rec = att.select(TEXT, model, tok)
    assert chosen == [max(range(3), key=lambda i: scores[i])] and rec["k"] == 1


@pytest.mark.parametrize("arch", ["llama", "gpt2", "neox"])
def test_prefix_attribution_equals_full_skipped_forwards(arch, tiny_model, tiny_tok):
    """The prefix-sharing scorer (L(L-1)/2 layer calls) gives the scores of L full skipped forwards."""
    if arch == "llama":
        model = tiny_model[0]
    elif arch == "gpt2":
        from transformers import GPT2Config, GPT2LMHeadModel

        torch.manual_seed(0)
        model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tiny_tok), n_layer=4, n_embd=32, n_head=2)).eval()
    else:
        from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

        torch.manual_seed(0)
        model = GPTNeoXForCausalLM(
            GPTNeoXConfig(
                vocab_size=len(tiny_tok),
                num_hidden_layers=4,
                hidden_size=32,
                num_attention_heads=2,
                intermediate_size=64,
            )
        ).eval()
    prefix = LayerAttribution(LayerConfig(method="prefix", batch_size=3))
    full = LayerAttribution(LayerConfig(method="hooks", batch_size=3))
    a, b = prefix.scores(TEXT, model, tiny_tok), full.scores(TEXT, model, tiny_tok)
    assert prefix._prefix_ok is True
    assert a == pytest.approx(b, abs=1e-5) and max(b) > 0


def test_importance_objective_params_per_bucket(tiny_model, tiny_prepared, tmp_path):
    with pytest.raises(ValidationError, match="not one of the objectives"):
        ImportanceConfig(objective_params={"ga": {}})
    with pytest.raises(ConfigError, match="retain_weight"):
        FitStrategy(options={"importance": {"objective_params": {"rl": {"retain_weight": -1}}}})
    from fit_unlearn.engine import Engine

    imp = {
        "high": 1e9,
        "low": 1e9,
        "objectives": ["npo_rt", "npo", "rl"],
        "objective_params": {"rl": {"retain_weight": 1.0}},
    }  # every request falls in the RL bucket
    eng = Engine(_fit_cfg(tiny_prepared, tmp_path / "bucket", {"filter": False, "importance": imp}), progress=False)
    res = eng.run()
    eng.close()
    assert {r["objective"] for r in res["requests"]} == {"rl"}
    assert all(r["objective_params"] == {"retain_weight": 1.0} for r in res["requests"])


def test_relative_attribution_uses_a_retain_profile(tiny_model):
    model, tok = tiny_model
    att = LayerAttribution(LayerConfig(k=1, relative=True))
    assert att.needs_calibration
    with pytest.raises(ConfigError, match="retain profile"):
        att.select(TEXT, model, tok)
    info = att.calibrate(["Name: Bo Lind\n\nAge: 51", "Description: Bo paints ships."], model, tok)
    assert len(info["layer_profile"]) == 3 and not att.needs_calibration
    chosen, rec = att.select(TEXT, model, tok)
    rel = [s / p for s, p in zip(rec["layer_scores"], att.profile, strict=True)]
    assert rec["relative_scores"] == pytest.approx(rel)
    assert chosen == [max(range(3), key=lambda i: rel[i])]


def test_selected_layers_exclude_norms_and_embeddings(tiny_model):
    model, _ = tiny_model
    names = layer_param_names(model, [0, 2])
    assert names and all(n.startswith(("model.layers.0.", "model.layers.2.")) for n in names)
    assert not any("norm" in n for n in names)
    assert any("q_proj" in n for n in names) and any("down_proj" in n for n in names)


def test_gpt2_layers_and_unknown_architecture(tiny_tok):
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=len(tiny_tok), n_layer=2, n_embd=32, n_head=2))
    path, layers = decoder_layers(gpt2)
    assert path == "transformer.h" and len(layers) == 2
    scores = LayerAttribution(LayerConfig(k=1)).scores(TEXT, gpt2, tiny_tok)
    assert len(scores) == 2
    with pytest.raises(ModelError, match="cannot find the decoder layers"):
        decoder_layers(torch.nn.Linear(2, 2))


def _embedding_grad_norm(model, tok, text, max_len=256):
    """The importance computed another way: a normal forward from token ids, the gradient of the loss kept
    on the embedding layer's output."""
    from fit_unlearn.text import collate, doc_example

    b = collate([doc_example(tok, text, max_len)], tok.pad_token_id)
    seen = []

    def keep(module, inputs, output):
        output.retain_grad()
        seen.append(output)

    hook = model.get_input_embeddings().register_forward_hook(keep)
    try:
        model(**b).loss.backward()
    finally:
        hook.remove()
    norm = seen[0].grad.norm().item()
    model.zero_grad(set_to_none=True)
    return norm


def test_importance_is_embedding_gradient_norm(tiny_model):
    model, tok = tiny_model
    i = importance(TEXT, model, tok)
    assert i > 0
    assert all(p.grad is None for p in model.parameters())  # no parameter gradients left behind
    assert i == pytest.approx(_embedding_grad_norm(model, tok, TEXT), rel=1e-4)
    other = "Description: Bo paints ships in the harbour."
    assert importance(other, model, tok) == pytest.approx(_embedding_grad_norm(model, tok, other), rel=1e-4)
    assert importance(other, model, tok) != pytest.approx(i, rel=1e-3)
    sel = ImportanceSelector(ImportanceConfig(high=i + 1, low=i - 1))
    assert sel.choose(TEXT, model, tok)[0].name == "npo"
    sel = ImportanceSelector(ImportanceConfig(high=i / 2, low=i / 4))
    assert sel.choose(TEXT, model, tok)[0].name == "npo_kl"
    sel = ImportanceSelector(ImportanceConfig(high=i * 3, low=i * 2))
    assert sel.choose(TEXT, model, tok)[0].name == "rl"


def test_calibration_sets_percentile_thresholds(tiny_model, tiny_data):
    model, tok = tiny_model
    texts = [d.text for d in tiny_data.forget[:4]]
    vals = [importance(t, model, tok) for t in texts]
    s0, s1, s2, s3 = sorted(vals)
    assert s0 < s1 < s2 < s3
    sel = ImportanceSelector(ImportanceConfig(calibrate=True, percentiles=(75, 25)))
    assert not sel.calibrated
    info = sel.calibrate(texts, model, tok)
    assert info["sample"] == pytest.approx(vals)
    # linear interpolation between order statistics of 4 values: rank 0.75 * 3 = 2.25 and 0.25 * 3 = 0.75
    assert info["high"] == pytest.approx(s2 + 0.25 * (s3 - s2)) and sel.high == info["high"]
    assert info["low"] == pytest.approx(s0 + 0.75 * (s1 - s0)) and sel.low == info["low"]
    assert sel.calibrated
    # so the largest request gets NPO+KL, the smallest RL, the two in between NPO
    chosen = {v: sel.choose(t, model, tok)[0].name for t, v in zip(texts, vals, strict=True)}
    assert [chosen[v] for v in (s0, s1, s2, s3)] == ["rl", "npo", "npo", "npo_kl"]


def test_fit_strategy_options_are_validated():
    with pytest.raises(ConfigError, match="filtr: unknown field"):
        FitStrategy(options={"filtr": True})
    with pytest.raises(ConfigError, match="layers.k: Input should be greater than 0"):
        FitStrategy(options={"layers": {"k": 0}})


def _fit_cfg(prepared, out, fit, **extra):
    from fit_unlearn.engine.config import build_config

    return build_config(
        {
            "prepared": str(prepared),
            "out": str(out),
            "stream": {"order_seed": 1, "limit": 4},
            "strategy": {"name": "fit", "fit": fit},
            # the paper's units (every weight of T's layers, open loop), not FIT's row-edit defaults
            "update": {"lr": 1e-3, "epochs": 1, "trainable": "full", "template_max_df": None},
            "loop": {"enabled": False},
            "eval": {"every": None},
            "checkpoint": {"every": 2},
            **extra,
        }
    )


def test_fit_in_engine_receipts_and_resume(tiny_prepared, tmp_path):
    from fit_unlearn.engine import Engine

    fit = {"layers": {"k": 1}, "importance": {"calibrate": True, "calibration_size": 4}}
    eng = Engine(_fit_cfg(tiny_prepared, tmp_path / "fit", fit), progress=False)
    res = eng.run()
    eng.close()
    assert len(res["requests"]) == 4
    for r in res["requests"]:
        rc = r["receipt"]
        assert {"filter", "layers", "importance"} <= set(rc) or rc.get("fully_redundant")
        if "layers" in rc:
            assert len(rc["layers"]["layers"]) == 1 and r["objective"] == rc["importance"]["objective"]
            assert set(rc["seconds"]) == {"filter", "attribution", "importance"}
    # the filter memory and calibration are in the checkpoint and restored exactly
    eng2 = Engine(_fit_cfg(tiny_prepared, tmp_path / "fit", fit), resume=True, progress=False)
    assert eng2.strategy.filter.size == eng.strategy.filter.size > 0
    assert eng2.strategy.importance.high == eng.strategy.importance.high
    eng2.close()


def test_relative_layers_profile_is_calibrated_once_and_restored(tiny_prepared, tmp_path):
    from fit_unlearn.engine import Engine

    fit = {"filter": False, "importance": False, "layers": {"k": 1, "relative": True, "retain_sample": 2}}
    eng = Engine(_fit_cfg(tiny_prepared, tmp_path / "rel", fit), progress=False)
    res = eng.run()
    eng.close()
    profile = eng.strategy.layers.profile
    assert profile is not None and len(profile) == 3
    assert all("relative_scores" in r["receipt"]["layers"] for r in res["requests"])
    calib = [e for e in eng.journal.events if e["event"] == "calibrated"]
    assert len(calib) == 1 and calib[0]["retain_docs"] == 2
    eng2 = Engine(_fit_cfg(tiny_prepared, tmp_path / "rel", fit), resume=True, progress=False)
    assert eng2.strategy.layers.profile == profile and not eng2.strategy.needs_calibration
    eng2.close()


def test_fit_ablation_switches(tiny_prepared, tmp_path):
    from fit_unlearn.engine import Engine

    fit = {"filter": False, "layers": False, "importance": False}
    eng = Engine(_fit_cfg(tiny_prepared, tmp_path / "abl", fit, **{}), progress=False)
    res = eng.run()
    eng.close()
    r = res["requests"][0]
    assert r["objective"] == "npo" and "filter" not in r["receipt"] and "layers" not in r["receipt"]
    assert r["params_touched"] == sum(p.numel() for p in eng.model.parameters())


def test_malicious_streams(tiny_data):
    from fit_unlearn.data.malicious import malicious_requests

    for kind in ("near_duplicate", "overlap", "common_tokens", "mixed"):
        reqs = malicious_requests(tiny_data.forget, kind, 12, seed=0)
        assert len(reqs) == 12 and len({r.id for r in reqs}) == 12
        assert all(r.text.strip() for r in reqs)
    nd = malicious_requests(tiny_data.forget, "near_duplicate", 20, seed=0)
    for a, b in zip(nd, nd[2:], strict=False):  # 2 sources, alternating, each with 1-2 words changed
        wa, wb = a.text.split(" "), b.text.split(" ")
        assert len(wa) == len(wb) and sum(x == y for x, y in zip(wa, wb, strict=True)) >= len(wa) - 4


def test_row_scores_are_the_loss_change_of_reading_a_token_as_zero(tiny_model, tiny_data):
    """T under row edits: score_r = |L_r - L_0| (mean token CE over the examples), L_r with every occurrence of r
    read as a zero embedding; a token the examples do not hold scores 0."""
    from fit_unlearn.strategies.fit.attribution import row_scores
    from fit_unlearn.text import IGNORE, collate, doc_example, qa_example, sequence_ce

    model, tok = tiny_model
    doc = tiny_data.forget[0]
    examples = [doc_example(tok, doc.text, 64), qa_example(tok, doc.qa[0])]
    ids = examples[0].ids
    present, absent = ids[3], next(t for t in range(len(tok)) if all(t not in e.ids for e in examples))
    scores = row_scores(model, tok, examples, [present, absent], batch_size=1)
    assert scores[1] == 0.0
    several = list(dict.fromkeys(ids[1:6]))  # batched: the same scores as one row at a time
    assert row_scores(model, tok, examples, several, batch_size=3) == pytest.approx(
        row_scores(model, tok, examples, several, batch_size=1), rel=1e-4, abs=1e-7
    )

    def mean_ce(zero: int | None) -> float:
        total = n = 0.0
        for e in examples:
            b = collate([e], tok.pad_token_id)
            emb = model.get_input_embeddings()(b["input_ids"]).detach()
            if zero is not None:
                emb[b["input_ids"] == zero] = 0
            with torch.no_grad():
                ce = sequence_ce(model(inputs_embeds=emb, attention_mask=b["attention_mask"]).logits, b["labels"])
            k = int((b["labels"][:, 1:] != IGNORE).sum())
            total, n = total + float(ce) * k, n + k
        return total / n

    assert scores[0] > 1e-4
    assert scores[0] == pytest.approx(abs(mean_ce(present) - mean_ce(None)), rel=1e-4)


def test_target_rows_keeps_the_rows_holding_the_mass(tiny_model, tiny_data, monkeypatch):
    """T under row edits: the highest-scoring own rows that hold ``rows_mass`` of the total, at least ``least``;
    every row when T is off."""
    import fit_unlearn.strategies.fit.strategy as fs

    model, tok = tiny_model
    monkeypatch.setattr(fs, "row_scores", lambda m, t, ex, rows, bs: [0.1, 0.5, 0.3, 0.1])
    fit = FitStrategy("ga", options={"filter": False, "importance": False, "layers": {"rows_mass": 0.75}})
    rows, rec = fit.target_rows([10, 11, 12, 13], [], model, tok)
    assert rows == [11, 12] and rec["kept"] == 2 and rec["candidates"] == [10, 11, 12, 13]
    assert fit.target_rows([10, 11, 12, 13], [], model, tok, least=3)[0] == [10, 11, 12]  # ties: lower id first
    assert FitStrategy("ga", options={"filter": False, "importance": False, "layers": {"rows_mass": 1.0}}).target_rows(
        [10, 11, 12, 13], [], model, tok
    )[0] == [10, 11, 12, 13]
    off = FitStrategy("ga", options={"filter": False, "importance": False, "layers": False})
    assert off.target_rows([10, 11, 12, 13], [], model, tok) == ([10, 11, 12, 13], None)


def test_fit_under_row_edits_attributes_rows_not_layers(tiny_prepared, tmp_path):
    """update.trainable: rows with FIT: no layer attribution is planned (rows are what moves); the rows edited are
    the ones T kept, a subset of the request's own tokens, and the receipt records the choice."""
    from fit_unlearn.engine import Engine, load_config

    over = {
        "prepared": str(tiny_prepared),
        "out": str(tmp_path / "r"),
        "stream": {"order_seed": 3, "limit": 3},
        "strategy": {
            "name": "fit",
            "objective": "ga",
            "fit": {"filter": False, "importance": False, "layers": {"rows_mass": 0.5}},
        },
        "update": {"lr": 1e-3, "epochs": 1, "retain_batch_size": 1, "trainable": "rows", "rows": {"max_df": 3}},
        "eval": {"every": None, "at_end": False},
    }
    eng = Engine(load_config(None, over), progress=False)
    res = eng.run()
    eng.close()
    for rec in res["requests"]:
        assert "layers" not in rec["receipt"]
        t = rec["rows"].get("targeted")
        if t is None:  # a single own row: nothing to choose
            assert len(rec["rows"]["tokens"]) == 1
            continue
        assert set(rec["rows"]["tokens"]) <= set(t["candidates"]) and len(rec["rows"]["tokens"]) == t["kept"]
        top = sorted(zip(t["scores"], t["candidates"], strict=True), key=lambda p: (-p[0], p[1]))[: t["kept"]]
        assert sorted(c for _, c in top) == rec["rows"]["tokens"]
    chosen = [r["rows"]["targeted"] for r in res["requests"] if "targeted" in r["rows"]]
    assert any(t["kept"] < len(t["candidates"]) for t in chosen)


def test_a_row_edit_that_falls_back_to_weights_gets_fit_s_layers(tiny_prepared, tmp_path):
    """rows.fallback: full below rows.min_rows own tokens: the request is a weight update, and FIT's T chooses its
    layers as it does without row edits."""
    from fit_unlearn.engine import Engine, load_config

    over = {
        "prepared": str(tiny_prepared),
        "out": str(tmp_path / "r"),
        "stream": {"order_seed": 3, "limit": 2},
        "strategy": {"name": "fit", "objective": "ga", "fit": {"filter": False, "importance": False}},
        "update": {
            "lr": 1e-3,
            "epochs": 1,
            "retain_batch_size": 1,
            "trainable": "rows",
            "rows": {"min_rows": 10_000, "fallback": "full"},
        },
        "eval": {"every": None, "at_end": False},
    }
    eng = Engine(load_config(None, over), progress=False)
    res = eng.run()
    eng.close()
    for rec in res["requests"]:
        assert not rec["rows"]["edited"] and "targeted" not in rec["rows"]
        chosen = rec["receipt"]["layers"]["layers"]
        assert chosen and rec["tensors_touched"] == len(layer_param_names(eng.model, chosen))


def _rows_cfg(prepared, out, fit: dict, rows: dict, **extra):
    from fit_unlearn.engine import load_config

    return load_config(
        None,
        {
            "prepared": str(prepared),
            "out": str(out),
            "stream": {"order_seed": 3, "limit": 3},
            "strategy": {"name": "fit", "fit": {"filter": False, **fit}},
            "update": {"retain_batch_size": 1, "rows": rows},
            "loop": {"max_steps": 3, "guard": {"enabled": False}},
            "eval": {"every": None, "at_end": False},
            **extra,
        },
    )


#: every request falls in I's random-labels bucket
ALL_RL = {"high": 1e9, "low": 1e9}


def test_fit_s_default_row_edits_take_ga_and_i_chooses_only_for_a_weight_fallback(tiny_prepared, tmp_path):
    """FIT's defaults: a row edit is unlearned with strategy.fit.rows_objective (GA), I is not asked; a request that
    falls back to a weight update gets I's objective, as without row edits.  rows_objective null: I's choice for
    row edits too."""
    from fit_unlearn.engine import Engine

    eng = Engine(_rows_cfg(tiny_prepared, tmp_path / "rows", {"importance": ALL_RL}, {"max_df": 3}), progress=False)
    res = eng.run()
    eng.close()
    edited = [r for r in res["requests"] if r["rows"]["edited"]]
    assert edited and all(r["objective"] == "ga" and "importance" not in r["receipt"] for r in edited)
    assert eng.cfg.loop_enabled and eng.cfg.update.trainable == "rows" and "loop" in edited[0]

    fallback = {"min_rows": 10_000, "fallback": "full"}
    eng = Engine(_rows_cfg(tiny_prepared, tmp_path / "full", {"importance": ALL_RL}, fallback), progress=False)
    res = eng.run()
    eng.close()
    assert all(not r["rows"]["edited"] and r["objective"] == "rl" for r in res["requests"])
    assert all(r["receipt"]["importance"]["objective"] == "rl" for r in res["requests"])

    fit = {"importance": ALL_RL, "rows_objective": None}
    eng = Engine(_rows_cfg(tiny_prepared, tmp_path / "i", fit, {"max_df": 3}), progress=False)
    res = eng.run()
    eng.close()
    assert all(r["objective"] == "rl" for r in res["requests"] if r["rows"]["edited"])
