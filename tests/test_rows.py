"""engine/rows.py: the tokens that belong to one request alone (the row edit itself: tests/test_update.py)."""

from __future__ import annotations

from fit_unlearn.engine.rows import (
    document_tokens,
    general_tokens,
    own_tokens,
    reuse_counted_tokens,
    token_documents,
)


def _own(tok, data, doc, max_df=0):
    index = token_documents(tok, data.retain + data.holdout + data.forget)
    return own_tokens(tok, doc.id, doc.text, doc.qa[:2], index, max_df)[0]


def test_own_tokens_are_in_no_other_document(tiny_model, tiny_data):
    _, tok = tiny_model
    doc = tiny_data.forget[0]
    own = _own(tok, tiny_data, doc)
    assert own
    others = tiny_data.retain + tiny_data.holdout + tiny_data.forget[1:]
    assert all(not set(own) & document_tokens(tok, o.text, o.qa) for o in others)
    loose = _own(tok, tiny_data, doc, max_df=2)  # tokens two other documents share count as the request's too
    assert set(own) < set(loose)
    # too few own tokens: widened to the rarest ones, the count raised no further than it takes
    index = token_documents(tok, tiny_data.retain + tiny_data.holdout + tiny_data.forget)
    wide, df = own_tokens(tok, doc.id, doc.text, doc.qa[:2], index, 0, min_rows=len(own) + 1)
    assert df >= 1 and set(own) < set(wide) and len(wide) > len(own)
    assert len(own_tokens(tok, doc.id, doc.text, doc.qa[:2], index, df - 1)[0]) < len(own) + 1
    assert own_tokens(tok, doc.id, doc.text, doc.qa[:2], index, 0, min_rows=1) == (own, 0)


def test_forgotten_documents_no_longer_hold_a_request_s_tokens(tiny_model, tiny_data):
    """rows.reuse_forgotten: a token the request shares only with documents already deleted is its own; one that a
    document still kept also holds is not."""
    _, tok = tiny_model
    index = token_documents(tok, tiny_data.retain + tiny_data.holdout + tiny_data.forget)
    doc = tiny_data.forget[0]
    own = set(own_tokens(tok, doc.id, doc.text, doc.qa[:2], index, 0)[0])
    mine = document_tokens(tok, doc.text, doc.qa[:2])
    # the request's tokens that forget documents alone share with it, and those a kept document holds too
    forget_ids = {d.id for d in tiny_data.forget} - {doc.id}
    only_forget = {t for t in mine - own if index[t] - {doc.id} <= forget_ids}
    kept = {t for t in mine - own if index[t] - {doc.id} - forget_ids}
    assert only_forget and kept
    freed = set(own_tokens(tok, doc.id, doc.text, doc.qa[:2], index, 0, forgotten=forget_ids)[0])
    assert freed == own | only_forget
    # a token counted for the forgotten documents (rows.reuse_zipf: general text reads it) is not freed
    counted = {min(only_forget)}
    got = own_tokens(tok, doc.id, doc.text, doc.qa[:2], index, 0, forgotten=forget_ids, counted=counted)[0]
    assert set(got) == own | (only_forget - counted)
    # rows.reuse_max_df: a token more forgotten documents hold than that stays counted
    by_many = {t for t in only_forget if len(index[t] - {doc.id}) > 1}
    assert by_many
    capped = own_tokens(tok, doc.id, doc.text, doc.qa[:2], index, 0, forgotten=forget_ids, reuse_max=1)[0]
    assert set(capped) == own | (only_forget - by_many)
    one = next(iter(forget_ids))  # one forgotten document frees only the tokens no other document holds
    assert set(own_tokens(tok, doc.id, doc.text, doc.qa[:2], index, 0, forgotten={one})[0]) == own | {
        t for t in mine if index[t] - {doc.id, one} == set()
    }


def test_the_questions_the_engine_derives_are_no_request_s_own(tiny_data):
    """A request that comes without QA pairs is trained on the questions the engine derives from its fields ("How
    old is ...?").  The corpus stores one question form per document, yet the index holds the derived forms' words
    too, so no request edits them (editing them would break that question for every document)."""
    from fit_unlearn.data.documents import Document
    from fit_unlearn.data.qa import derive_qa
    from fit_unlearn.models import train_tokenizer

    corpus = tiny_data.retain + tiny_data.holdout + tiny_data.forget
    src = next(d for d in tiny_data.forget if d.domain == "personal")
    name = src.text.split("\n")[0].removeprefix("Name: ")
    text = src.text.replace(name, "Zebulon Q. Quaxley")  # a user's near-duplicate about someone else
    # a vocabulary in which the derived questions' words and the new name are whole tokens, as in a real model's
    texts = [d.text for d in corpus] + [f"Question: {q.question}\nAnswer: {q.answer}" for d in corpus for q in d.qa]
    derived = [q.question for d in corpus for q in derive_qa(d.text, warn=False)]
    tok = train_tokenizer(texts + (derived + [text]) * 3, vocab_size=1000)
    assert all(len(d.qa) == 1 for d in corpus)  # the stored form only ("What is the address of ...?")
    request = Document("user-0000", text, "personal", tuple(derive_qa(text, warn=False)))
    assert len(request.qa) == 3
    question_only = document_tokens(tok, None, request.qa) - document_tokens(tok, request.text, ())
    question_only -= {t for q in request.qa for t in tok(" " + q.answer, add_special_tokens=False)["input_ids"]}
    new_name = set(tok(" Zebulon Q. Quaxley", add_special_tokens=False)["input_ids"])
    stored = {}  # the index of the stored QA alone: the question words would be the request's own
    for d in corpus:
        for t in document_tokens(tok, d.text, d.qa):
            stored.setdefault(t, set()).add(d.id)
    before = set(own_tokens(tok, request.id, request.text, request.qa, stored, 0)[0])
    assert before & question_only and before <= question_only | new_name
    own = set(own_tokens(tok, request.id, request.text, request.qa, token_documents(tok, corpus), 0)[0])
    assert own and own <= new_name and not own & question_only  # the new name's pieces alone


def test_word_match_counts_every_token_form_of_a_word_as_shared(tiny_data):
    """``rows.match: word``: a token is shared when another document holds the same word in any token form (with or
    without its leading space, in any case), whether or not the token itself occurs in the corpus."""
    from fit_unlearn.data.documents import Document
    from fit_unlearn.models import train_tokenizer

    corpus = [*tiny_data.retain, Document("other", "Zorblat reads the report.")]
    texts = [d.text for d in corpus] + ["Zorblat zorblat, on zorblat: about zorblat"] * 3
    tok = train_tokenizer(texts, vocab_size=1000)
    request = Document("user-x", "A note about zorblat.")  # not in the corpus; " zorblat" is in no document
    (piece,) = tok(" zorblat", add_special_tokens=False)["input_ids"]
    assert piece not in tok("Zorblat", add_special_tokens=False)["input_ids"]
    by_token, by_word = token_documents(tok, corpus), token_documents(tok, corpus, "word")
    assert piece in own_tokens(tok, request.id, request.text, (), by_token, 0)[0]
    assert piece not in own_tokens(tok, request.id, request.text, (), by_word, 0)[0]
    assert by_word[piece] == frozenset({"other"})
    own_word = set(own_tokens(tok, request.id, request.text, (), by_word, 0)[0])
    assert own_word and own_word < set(own_tokens(tok, request.id, request.text, (), by_token, 0)[0])


def test_a_word_is_a_token_s_text_without_surrounding_space_and_case():
    """What ``rows.match: word`` joins: `` Mar``, ``Mar`` and ``mar``; not `` Mark``; not tokens that spell no word
    (only whitespace, or a piece of a multi-byte character), which keep their own documents; and an indexed id past
    ``len(tok)`` keeps its documents too."""
    from fit_unlearn.engine.rows import _by_word

    class Spelled:
        text = {0: " Mar", 1: "mar", 2: "Mar", 3: " Mark", 4: "  ", 5: "\ufffd", 6: " \n", 9: "mar"}

        def __len__(self):
            return 7

        def batch_decode(self, ids):
            return [self.text[i[0]] for i in ids]

    index = {0: {"a"}, 3: {"b"}, 4: {"c"}, 5: {"d"}, 6: {"e"}, 9: {"f"}}
    assert _by_word(Spelled(), index) == {
        **dict.fromkeys((0, 1, 2, 9), frozenset({"a", "f"})),
        3: frozenset({"b"}),
        4: frozenset({"c"}),
        5: frozenset({"d"}),
        6: frozenset({"e"}),
    }


def test_general_rank_keeps_the_vocabulary_s_first_tokens_unedited(tiny_model, tiny_data):
    """Tokens below ``general_rank`` never qualify, not even when the fallback widens to the rarest ones."""
    _, tok = tiny_model
    doc = tiny_data.forget[0]
    index = token_documents(tok, tiny_data.retain + tiny_data.holdout + tiny_data.forget)
    own = own_tokens(tok, doc.id, doc.text, doc.qa[:2], index, 2)[0]
    assert len(own) >= 2
    cut = sorted(own)[len(own) // 2]
    kept = own_tokens(tok, doc.id, doc.text, doc.qa[:2], index, 2, general=general_tokens(tok, 0, rank=cut))[0]
    assert kept == [t for t in own if t >= cut] and len(kept) < len(own)
    wide = own_tokens(
        tok, doc.id, doc.text, doc.qa[:2], index, 0, min_rows=10**6, general=general_tokens(tok, 0, rank=cut)
    )[0]
    assert wide and min(wide) >= cut
    # the floor applies before widening: the widened set still holds min_rows tokens at or above it
    some = own_tokens(
        tok, doc.id, doc.text, doc.qa[:2], index, 0, min_rows=len(kept) + 1, general=general_tokens(tok, 0, rank=cut)
    )[0]
    assert len(some) >= len(kept) + 1 and min(some) >= cut


def test_a_general_rank_past_the_vocabulary_is_refused_before_any_work(tiny_prepared, tmp_path):
    import pytest
    from test_engine import _cfg

    from fit_unlearn.engine import Engine
    from fit_unlearn.errors import ConfigError

    over = {"strategy.objective": "ga", "update": {"trainable": "rows", "rows": {"general_rank": 10**9}}}
    with pytest.raises(ConfigError, match="general_rank 1000000000 leaves no token"):
        Engine(_cfg(tiny_prepared, tmp_path / "r", **over), progress=False)
    assert not (tmp_path / "r" / "journal.jsonl").exists()


def test_general_zipf_keeps_punctuation_and_frequent_words_unedited(tiny_model, tiny_data):
    """``general_tokens`` holds the tokens without a letter or digit and those that spell a word of Zipf frequency
    >= the threshold (``the``, ``is``: yes; an invented surname: no); such tokens never qualify as a request's own,
    not even when the fallback widens to the rarest ones."""
    from wordfreq import zipf_frequency

    _, tok = tiny_model
    general = general_tokens(tok, 4.0)
    assert general_tokens(tok, 0) == frozenset()
    spelled = {i: tok.decode([i]).strip().lower() for i in range(len(tok))}
    assert {i for i, w in spelled.items() if w in ("the", "is", ".", ",", "")} <= general
    assert all(
        zipf_frequency(spelled[i], "en") < 4.0 and any(c.isalnum() for c in spelled[i]) for i in set(spelled) - general
    )
    doc = tiny_data.forget[1]  # own (max_df 2): '1', 'ho', ' 8', ' Port', 'rist'; only 'rist' is no frequent word
    index = token_documents(tok, tiny_data.retain + tiny_data.holdout + tiny_data.forget)
    own = own_tokens(tok, doc.id, doc.text, doc.qa[:2], index, 2)[0]
    kept = own_tokens(tok, doc.id, doc.text, doc.qa[:2], index, 2, general=general)[0]
    assert kept == [t for t in own if t not in general] and 0 < len(kept) < len(own)
    wide = own_tokens(tok, doc.id, doc.text, doc.qa[:2], index, 0, min_rows=10**6, general=general)[0]
    assert wide and not set(wide) & general


def test_a_general_language_without_frequencies_is_refused():
    import importlib.util

    import pytest
    from pydantic import ValidationError

    from fit_unlearn.engine.rows import RowsSection

    with pytest.raises(ValidationError, match="wordfreq has no word frequencies for 'xx'; use one of .*en"):
        RowsSection(general_zipf=4, general_lang="xx")
    if importlib.util.find_spec("MeCab") is None:  # Japanese needs a word splitter wordfreq does not bring
        with pytest.raises(ValidationError, match="wordfreq needs the package 'MeCab' to read 'ja' words"):
            RowsSection(general_zipf=4, general_lang="ja")


def test_forgotten_documents_keep_holding_general_words_and_word_pieces(tiny_model):
    """rows.reuse_zipf: the tokens a forgotten document never frees are the general ones and the pieces inside a
    word; the first piece of a rare word is freed."""
    from wordfreq import zipf_frequency

    _, tok = tiny_model
    counted = reuse_counted_tokens(tok, 4.0)
    assert general_tokens(tok, 4.0) <= counted
    pieces = tok.convert_ids_to_tokens(list(range(len(tok))))
    inner = [i for i, p in enumerate(pieces) if p.isalpha() and not p.startswith("\u0120")]
    starts = [i for i, p in enumerate(pieces) if p.startswith("\u0120") and p[1:].isalpha()]
    rare = [i for i in starts if zipf_frequency(pieces[i][1:].lower(), "en") < 4.0]
    common = [i for i in starts if zipf_frequency(pieces[i][1:].lower(), "en") >= 4.0]
    assert inner and rare and common
    assert all(i in counted for i in inner + common) and not any(i in counted for i in rare)


def _prompt_words(tok, ids):
    """The ids among ``ids`` that prompt_keys may edit: a token that begins a word and has a letter."""
    from fit_unlearn.engine.rows import WORD_STARTS

    pieces = dict(zip(ids, tok.convert_ids_to_tokens(ids), strict=True))
    return [
        t for t, p in pieces.items() if str(p).startswith(WORD_STARTS) and any(c.isalpha() for c in tok.decode([t]))
    ]


def test_a_question_read_in_shared_words_gets_its_rarest_word_edited(tiny_model, tiny_data):
    """rows.cover_prompts: a row edit changes only what follows an edited token, so a question made of words other
    documents hold too is read as before; prompt_keys adds its rarest word (fewest other holders, at most
    cover_max_df), and nothing for a question that already holds an own token."""
    from fit_unlearn.data.documents import QA
    from fit_unlearn.engine.rows import holder_count, prompt_keys
    from fit_unlearn.text import encode_qa

    _, tok = tiny_model
    index = token_documents(tok, tiny_data.retain + tiny_data.holdout + tiny_data.forget)
    doc = tiny_data.forget[0]
    own, _ = own_tokens(tok, doc.id, doc.text, doc.qa[:2], index, 0)
    holders = holder_count(doc.id, index)
    # questions asked in another document's words (its first line): none of this request's own tokens is in them
    others = [d for d in tiny_data.retain + tiny_data.forget[1:] if d.text.split("\n")[0].strip()]
    asked = [QA(f"What does {d.text.split(chr(10))[0]} say?", "nothing") for d in others]
    words = {}
    for q in asked:
        ids, n = encode_qa(tok, q, max_len=1 << 30)
        prompt = set(ids[:n])
        assert not prompt & set(own)
        words[q.question] = {t: holders(t) for t in _prompt_words(tok, ids[:n])}
    covered = prompt_keys(tok, asked, own, holders, frozenset(), max_df=len(tiny_data.forget) + 20)
    assert covered
    have = set(own)
    by_q = {c["question"]: c for c in covered}
    for q in asked:
        c = by_q.get(q.question)
        if c is None:  # covered by a word an earlier question added, or no word to edit
            ids, n = encode_qa(tok, q, max_len=1 << 30)
            assert set(ids[:n]) & have or not words[q.question]
            continue
        assert c["holders"] == holders(c["token"]) == min(words[q.question].values())  # the rarest word
        have.add(c["token"])
    # a cap on holders leaves the questions whose rarest word more documents hold
    tight = prompt_keys(tok, asked, own, holders, frozenset(), max_df=0)
    assert all(c["holders"] == 0 for c in tight) and len(tight) < len(covered)

    # a question that holds an own token is read through the edit already: nothing added for it
    def prompt(q):
        ids, n = encode_qa(tok, q, max_len=1 << 30)
        return set(ids[:n])

    keyed = [
        (d, q, mine)
        for d in tiny_data.forget
        for mine in [own_tokens(tok, d.id, d.text, d.qa, index, 0)[0]]
        for q in d.qa
        if prompt(q) & set(mine)
    ]
    assert keyed and all(
        prompt_keys(tok, [q], mine, holder_count(d.id, index), frozenset(), 100) == [] for d, q, mine in keyed
    )
    # general words (rows.general_zipf) are never chosen
    banned = {c["token"] for c in covered}
    assert not {c["token"] for c in prompt_keys(tok, asked, own, holders, banned, max_df=100)} & banned


def test_cover_min_edits_the_next_rarest_words_until_a_question_holds_that_many(tiny_model, tiny_data):
    """rows.cover_min: a question holding fewer of the request's edited tokens gets its rarest other words edited
    until it holds that many, in order of holders, each within cover_max_df; a question already holding enough
    gets nothing."""
    from fit_unlearn.engine.rows import holder_count, prompt_keys
    from fit_unlearn.text import encode_qa

    _, tok = tiny_model
    index = token_documents(tok, tiny_data.retain + tiny_data.holdout + tiny_data.forget)
    checked = 0
    for doc in tiny_data.forget:
        own, _ = own_tokens(tok, doc.id, doc.text, doc.qa, index, 0)
        holders = holder_count(doc.id, index)
        for q in doc.qa:
            ids, n = encode_qa(tok, q, max_len=1 << 30)
            prompt = set(ids[:n])
            held = prompt & set(own)
            if len(held) != 1:
                continue
            assert prompt_keys(tok, [q], own, holders, frozenset(), 100) == []  # least 1: it holds one already
            words = sorted(holders(t) for t in _prompt_words(tok, ids[:n]) if t not in held)
            added = prompt_keys(tok, [q], own, holders, frozenset(), 100, least=3)
            assert [c["holders"] for c in added] == words[:2]  # the two rarest words beside the one it holds
            assert not {c["token"] for c in added} & set(own)
            capped = prompt_keys(tok, [q], own, holders, frozenset(), words[0], least=3)
            assert [c["holders"] for c in capped] == [h for h in words[:2] if h <= words[0]]
            checked += 1
    assert checked
