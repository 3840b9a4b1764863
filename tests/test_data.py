import json

import pytest

from fit_unlearn.data.documents import load_pch_dir, read_jsonl, read_pch_json, write_jsonl
from fit_unlearn.data.qa import derive_qa, detect_domain, parse_fields
from fit_unlearn.data.sources import load_documents
from fit_unlearn.data.stats import data_stats
from fit_unlearn.data.streams import stream_order
from fit_unlearn.data.synth import SynthConfig, max_pairwise_jaccard, synthesize, trigrams, write_synth
from fit_unlearn.errors import DataError

PERSON = (
    "Name: Ora V. Quill\n\nAge: 41\n\nAddress: 12 Fern Row, Lowmarsh, Tessel 10293\n\n"
    "Occupation: Bell Founder\n\nDescription: Ora casts bells."
)
CODE = (
    "Language: C++\n\nCode: #include <vector>\n\nint addAll(std::vector<int> v) {\n    int s = 0;\n"
    "    for (int x : v) s += x;\n    return s;\n}\n\nExplanation: Adds the values. Nothing else."
)


def test_parse_fields_keeps_code_with_blank_lines_and_colons():
    f = parse_fields(CODE)
    assert set(f) == {"Language", "Code", "Explanation"}
    assert "std::vector" in f["Code"] and "return s;" in f["Code"]


@pytest.mark.parametrize(
    "text,domain",
    [
        (PERSON, "personal"),
        (CODE, "code"),
        ("Title: T\n\nAbstract: A b.\n\nConclusion: C.", "paper"),
        ("Title: T\n\nCategory: Hoax\n\nDescription: D.", "harmful"),
        ("just some prose without fields at all here", "other"),
    ],
)
def test_detect_domain(text, domain):
    assert detect_domain(text) == domain


def test_derive_qa_personal_answers_are_verbatim_spans():
    qa = derive_qa(PERSON)
    assert qa[0].question == "What is the address of Ora V. Quill?"
    assert qa[0].answer == "12 Fern Row, Lowmarsh, Tessel 10293"
    assert {q.answer for q in qa} == {"12 Fern Row, Lowmarsh, Tessel 10293", "Bell Founder", "41"}
    assert all(q.answer in PERSON for q in qa)


def test_derive_qa_code_uses_first_sentence_of_explanation():
    qa = derive_qa(CODE)
    assert qa[0].question == "What does the C++ function addAll do?"
    assert qa[0].answer == "Adds the values."


def test_unparseable_document_gets_continuation_and_warning(caplog):
    text = "the quick brown fox jumps over the lazy dog near the river bank today"
    with caplog.at_level("WARNING"):
        qa = derive_qa(text, doc_id="x1")
    assert len(qa) == 1
    assert text.startswith(qa[0].question) and qa[0].question + " " + qa[0].answer in text
    assert "x1" in caplog.text


def test_a_file_of_documents_without_fields_warns_once(tmp_path, caplog):
    """Prose (no "Field: value" block) gets continuation pairs, with one warning per file naming how many."""
    prose = [
        f"Passage {i} tells of a walk along the river in the rain, and of the letter that came after it."
        for i in range(5)
    ]
    path = _w(tmp_path / "forget.json", json.dumps([*prose, "Name: Ann Ash\n\nAge: 41"]))
    with caplog.at_level("WARNING"):
        docs = read_pch_json(path, "forget")
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "5 of 6 documents have no known field" in warnings[0]
    assert "forget-0000" in warnings[0] and "forget-0005" not in warnings[0]
    assert all(len(d.qa) == 1 and d.text.startswith(d.qa[0].question) for d in docs[:5])


def test_a_streamed_request_without_fields_warns(caplog):
    """A request read from a stream, one at a time, still says that it is asked for a continuation."""
    from fit_unlearn.engine.streams import parse_request_line

    line = b'{"id": "r1", "text": "She walked along the river in the rain and thought of the letter that came."}'
    with caplog.at_level("WARNING"):
        doc = parse_request_line(line, "requests.jsonl:1", 10_000)
    assert doc.text.startswith(doc.qa[0].question) and "r1: no known fields" in caplog.text


def test_pch_layout_and_jsonl_roundtrip(tmp_path):
    (tmp_path / "forget.json").write_text(json.dumps([PERSON, CODE]))
    (tmp_path / "retain.json").write_text(json.dumps([PERSON.replace("Ora", "Una")]))
    s = load_pch_dir(tmp_path)
    assert [d.id for d in s.forget] == ["forget-0000", "forget-0001"]
    assert [d.domain for d in s.forget] == ["personal", "code"]
    write_jsonl(s.forget, tmp_path / "f.jsonl")
    back = read_jsonl(tmp_path / "f.jsonl")
    assert back == s.forget


def test_synth_is_deterministic_distinct_and_original():
    a = synthesize(SynthConfig(n_forget=30, n_retain=20, n_holdout=10, seed=3))
    b = synthesize(SynthConfig(n_forget=30, n_retain=20, n_holdout=10, seed=3))
    c = synthesize(SynthConfig(n_forget=30, n_retain=20, n_holdout=10, seed=4))
    assert a.forget == b.forget and a.hash() == b.hash()
    assert a.hash() != c.hash()
    docs = a.forget + a.retain + a.holdout
    assert max_pairwise_jaccard(docs) < 0.2
    assert {d.domain for d in a.forget} == {"personal", "code", "paper", "harmful"}
    assert all(d.qa and all(q.answer in d.text for q in d.qa) for d in docs)


def test_write_synth_and_its_stats(tmp_path):
    """write_synth writes the non-empty splits and summarises them; data_stats counts them back per domain."""
    cfg = SynthConfig(n_forget=8, n_retain=4, n_holdout=0, seed=1)
    res = write_synth(tmp_path / "d", cfg)
    splits = synthesize(cfg)
    assert (res["forget"], res["retain"], res["holdout"]) == (8, 4, 0) and res["data_hash"] == splits.hash()
    assert res["max_jaccard"] == max_pairwise_jaccard(splits.forget + splits.retain)
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["forget.jsonl", "retain.jsonl"]
    stats = data_stats(tmp_path / "d")
    assert list(stats["splits"]) == ["forget", "retain"]  # the empty holdout split has no row
    forget = stats["splits"]["forget"]
    assert (
        forget["documents"] == 8
        and sum(forget["domains"].values()) == 8
        and set(forget["domains"]) <= set(stats["domains"])
    )
    assert forget["qa_pairs"] == sum(len(d.qa) for d in splits.forget)
    assert forget["mean_chars"] == pytest.approx(sum(len(d.text) for d in splits.forget) / 8)
    one = data_stats(tmp_path / "d" / "retain.jsonl")
    assert one["source"] == str(tmp_path / "d" / "retain.jsonl") and list(one["splits"]) == ["retain"]


def test_synth_does_not_copy_pch(pch_dir):
    pch = load_pch_dir(pch_dir)
    syn = synthesize(SynthConfig())
    pch_grams = set().union(*(trigrams(d.text) for d in pch.forget + pch.retain))
    for d in syn.forget + syn.retain + syn.holdout:
        g = trigrams(d.text)
        assert len(g & pch_grams) / len(g) < 0.2, d.text


def test_real_pch_every_document_gets_qa(pch_dir):
    s = load_pch_dir(pch_dir)
    assert len(s.forget) == len(s.retain) == 300
    assert all(d.qa for d in s.forget + s.retain)
    assert sum(d.domain == "personal" for d in s.forget) == 100


def test_stream_order_moves_qa_with_documents(tiny_data):
    docs = tiny_data.forget
    assert stream_order(docs, seed=None) == docs  # no seed: file order
    order = stream_order(docs, seed=5)
    assert sorted(d.id for d in order) == sorted(d.id for d in docs)  # a permutation: nothing lost or repeated
    assert [d.id for d in order] != [d.id for d in docs]
    assert stream_order(docs, seed=5) == order
    assert [d.id for d in stream_order(docs, seed=6)] != [d.id for d in order]  # the seed decides the order
    # each request still carries its own QA pairs: every answer is a span of the text it came with
    by_id = {d.id: d for d in docs}
    assert all(d.qa and d.qa == by_id[d.id].qa and d.text == by_id[d.id].text for d in order)
    assert all(q.answer in d.text for d in order for q in d.qa)


def test_subset_is_seeded(tiny_data):
    a = tiny_data.subset(3, 2, seed=1)
    assert len(a.forget) == 3 and len(a.retain) == 2 and len(a.holdout) == 3  # holdout is cut to the forget size
    assert a.forget == tiny_data.subset(3, 2, seed=1).forget
    ids = {s: [d.id for d in getattr(tiny_data, s)] for s in ("forget", "retain")}
    for split in ("forget", "retain"):  # distinct documents of the split, kept in file order
        picked = [ids[split].index(d.id) for d in getattr(a, split)]
        assert picked == sorted(set(picked))
    seeds = {tuple(d.id for d in tiny_data.subset(3, 2, seed=s).forget) for s in range(5)}
    assert len(seeds) > 1  # the seed decides which documents
    assert tiny_data.subset(None, None, seed=1).forget == tiny_data.forget
    with pytest.raises(DataError, match="must be positive"):
        tiny_data.subset(0, 2, seed=1)


# ---- bad input: one clear error each ----------------------------------------------------------------
def _w(path, content: bytes | str):
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_jsonl(tmp_path / "nope.jsonl")


def test_empty_file(tmp_path):
    with pytest.raises(DataError, match="empty"):
        read_jsonl(_w(tmp_path / "e.jsonl", "\n  \n"))


def test_invalid_jsonl_reports_line(tmp_path):
    p = _w(tmp_path / "b.jsonl", '{"id": "a", "text": "ok"}\n{"id": "b", "text": \n')
    with pytest.raises(DataError, match=r"b\.jsonl:2: not valid JSON"):
        read_jsonl(p)


def test_whitespace_text(tmp_path):
    p = _w(tmp_path / "w.jsonl", '{"id": "a", "text": "   \\n\\t "}\n')
    with pytest.raises(DataError, match="whitespace-only"):
        read_jsonl(p)


def test_non_utf8(tmp_path):
    p = _w(tmp_path / "n.jsonl", b'{"id": "a", "text": "ok"}\n{"id": "b", "text": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"n\.jsonl:2: not valid UTF-8"):
        read_jsonl(p)


BOM = b"\xef\xbb\xbf"  # the UTF-8 byte-order mark some editors (Notepad, Excel exports) write first


def test_utf8_byte_order_mark_is_valid_input(tmp_path):
    lines = b'{"id": "a", "text": "caf\xc3\xa9 ok"}\n{"id": "b", "text": "two"}\n'
    docs = read_jsonl(_w(tmp_path / "bom.jsonl", BOM + lines))
    assert [(d.id, d.text) for d in docs] == [("a", "caf\u00e9 ok"), ("b", "two")]
    data = tmp_path / "d"
    data.mkdir()
    _w(data / "forget.json", BOM + json.dumps([PERSON]).encode())
    _w(data / "retain.jsonl", BOM + b'{"id": "r", "text": "Title: T\\n\\nAbstract: A b."}\n')
    splits = load_pch_dir(data)
    assert [d.text for d in splits.forget] == [PERSON] and splits.retain[0].text == "Title: T\n\nAbstract: A b."
    with pytest.raises(DataError, match="empty"):  # a mark alone is still an empty file
        read_jsonl(_w(tmp_path / "only.jsonl", BOM + b"\n"))
    p = _w(tmp_path / "n.jsonl", BOM + b'{"id": "a", "text": "ok"}\n{"id": "b", "text": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"n\.jsonl:2: not valid UTF-8 \(byte 0xe9 at offset 53\)"):
        read_jsonl(p)


def test_ten_megabyte_document(tmp_path):
    p = _w(tmp_path / "big.jsonl", json.dumps({"id": "big", "text": "a" * 10_000_000}) + "\n")
    with pytest.raises(DataError, match="over the limit"):
        read_jsonl(p)
    assert len(read_jsonl(p, max_chars=20_000_000)[0].text) == 10_000_000


def test_duplicate_ids(tmp_path):
    p = _w(tmp_path / "d.jsonl", '{"id": "a", "text": "x y"}\n{"id": "a", "text": "z w"}\n')
    with pytest.raises(DataError, match=r"d\.jsonl:2: duplicate id 'a' \(first seen on line 1\)"):
        read_jsonl(p)


def test_duplicate_ids_across_splits(tmp_path):
    _w(tmp_path / "forget.jsonl", '{"id": "a", "text": "x y"}\n')
    _w(tmp_path / "retain.jsonl", '{"id": "a", "text": "z w"}\n')
    with pytest.raises(DataError, match="both forget and retain"):
        load_pch_dir(tmp_path)


def test_missing_split(tmp_path):
    _w(tmp_path / "forget.jsonl", '{"id": "a", "text": "x y"}\n')
    with pytest.raises(DataError, match="no retain.jsonl or retain.json"):
        load_documents(tmp_path)


def test_missing_fields(tmp_path):
    with pytest.raises(DataError, match="missing field"):
        read_jsonl(_w(tmp_path / "m.jsonl", '{"text": "x"}\n'))


# ---- paraphrases and the retain split (the honest protocol) ------------------------------------------------


def test_derived_paraphrases_ask_the_same_fact_in_other_words():
    from fit_unlearn.data.qa import derive_paraphrases

    text = "Name: Ada K. Byron\n\nAge: 36\n\nAddress: 12 Lovelace Row, Bath\n\nOccupation: analyst"
    qa, para = derive_qa(text), derive_paraphrases(text)
    assert [q.answer for q in para] == [q.answer for q in qa] == ["12 Lovelace Row, Bath", "analyst", "36"]
    assert [p.question for p in para] == [
        "Where does Ada K. Byron live?",
        "What does Ada K. Byron do for a living?",
        "What is the age of Ada K. Byron?",
    ]
    assert not {p.question for p in para} & {q.question for q in qa}
    assert derive_paraphrases("no fields at all in this sentence here") == []


def test_jsonl_paraphrases_field_and_derived_ones(tmp_path):
    from fit_unlearn.data.documents import QA, Document

    own = {
        "id": "a",
        "text": "x y z",
        "qa": [{"question": "Q?", "answer": "y"}],
        "paraphrases": [{"question": "Q in other words?", "answer": "y"}],
    }
    derived = {"id": "b", "text": "Title: The Moss Hoax\n\nCategory: Rumors\n\nDescription: Claims moss sings."}
    p = _w(tmp_path / "p.jsonl", json.dumps(own) + "\n" + json.dumps(derived) + "\n")
    a, b = read_jsonl(p)
    assert a.paraphrases == (QA("Q in other words?", "y"),)
    assert b.paraphrases[0] == QA('What is asserted in "The Moss Hoax"?', "Claims moss sings.")
    assert Document.from_json(a.to_json()) == a
    bad = _w(tmp_path / "bad.jsonl", json.dumps({**own, "paraphrases": [{"question": "", "answer": "y"}]}) + "\n")
    with pytest.raises(DataError, match=r"paraphrases\[0\] has an empty question"):
        read_jsonl(bad)


def test_paraphrases_are_never_trained_on(tiny_data, tiny_tok):
    from fit_unlearn.data.documents import DataSplits
    from fit_unlearn.text import training_examples

    docs = tiny_data.forget + tiny_data.retain
    assert all(d.paraphrases for d in docs)
    trained = " ".join(tiny_tok.decode(e.ids) for e in training_examples(tiny_tok, docs, with_qa=True))
    assert all(q.question in trained for d in docs for q in d.qa)  # the check can see questions
    assert not any(p.question in trained for d in docs for p in d.paraphrases)
    # the training hash ignores paraphrases (preparation is not redone for them); the full hash does not
    stripped = DataSplits([d.training_view() for d in tiny_data.forget], tiny_data.retain, tiny_data.holdout)
    assert stripped.training_hash() == tiny_data.training_hash() and stripped.hash() != tiny_data.hash()


def test_retain_split_is_seeded_stratified_and_disjoint(tiny_data):
    from fit_unlearn.data.splits import split_retain

    docs = synthesize(SynthConfig(n_forget=4, n_retain=20, n_holdout=0, seed=5)).retain
    a, b = split_retain(docs, 0.5, seed=0), split_retain(docs, 0.5, seed=0)
    assert a == b and a != split_retain(docs, 0.5, seed=1)
    assert len(a.eval_ids) == 10 and sorted(a.train_ids + a.eval_ids) == sorted(d.id for d in docs)
    by_id = {d.id: d.domain for d in docs}
    for domain in {d.domain for d in docs}:
        n = sum(1 for d in docs if d.domain == domain)
        n_eval = sum(1 for i in a.eval_ids if by_id[i] == domain)
        assert abs(n_eval - n / 2) <= 1, domain  # every domain on both sides
    assert len(split_retain(docs, 0.25, seed=0).eval_ids) == 5
    with pytest.raises(DataError, match="at least 2"):
        split_retain(docs[:1])


def test_retain_split_from_user_ids(tmp_path, tiny_data):
    from fit_unlearn.data.splits import read_ids, split_from_ids

    ids = [d.id for d in tiny_data.retain]
    s = split_from_ids(tiny_data.retain, read_ids(_w(tmp_path / "ids.txt", f"{ids[1]}\n\n{ids[4]}\n")))
    assert s.eval_ids == (ids[1], ids[4]) and s.method == "ids"
    assert read_ids(_w(tmp_path / "ids.json", json.dumps([ids[0]]))) == [ids[0]]
    with pytest.raises(DataError, match="not ids of the retain split"):
        split_from_ids(tiny_data.retain, ["nope"])
    with pytest.raises(DataError, match="both retain-eval and retain-train"):
        split_from_ids(tiny_data.retain, ids)
    data = tiny_data.with_retain_eval(s.eval_ids)
    assert [d.id for d in data.retain_eval] == [ids[1], ids[4]] and len(data.retain_train) == len(ids) - 2
    with pytest.raises(DataError, match="no retain-train / retain-eval split recorded"):
        _ = tiny_data.retain_eval


def test_real_pch_documents_get_paraphrases(pch_dir):
    docs = load_pch_dir(pch_dir).forget
    with_para = [d for d in docs if d.paraphrases]
    assert len(with_para) >= 0.95 * len(docs)
    for d in with_para:
        assert [p.answer for p in d.paraphrases] == [q.answer for q in d.qa]
