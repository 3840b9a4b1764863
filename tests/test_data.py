import json

import pytest

from fit_unlearn.data.documents import load_documents, load_pch_dir, read_jsonl, write_jsonl
from fit_unlearn.data.qa import derive_qa, detect_domain, parse_fields
from fit_unlearn.data.streams import stream_order
from fit_unlearn.data.synth import SynthConfig, max_pairwise_jaccard, synthesize, trigrams
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
    order = stream_order(tiny_data.forget, seed=5)
    assert sorted(d.id for d in order) == sorted(d.id for d in tiny_data.forget)
    assert order != tiny_data.forget
    by_id = {d.id: d for d in tiny_data.forget}
    assert all(d.qa == by_id[d.id].qa for d in order)
    assert stream_order(tiny_data.forget, seed=5) == order


def test_subset_is_seeded(tiny_data):
    a = tiny_data.subset(3, 2, seed=1)
    assert len(a.forget) == 3 and len(a.retain) == 2
    assert a.forget == tiny_data.subset(3, 2, seed=1).forget


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
