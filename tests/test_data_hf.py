"""Hugging Face question / answer data sets in TOFU's layout (fit_unlearn.data.hf): every form a user keeps one
in, grouping by subject, one-line errors, and prepare / run on a tiny model with such a data set."""

import json

import pytest

from fit_unlearn.cli import main
from fit_unlearn.data.documents import QA, Document
from fit_unlearn.data.hf import QADatasetConfig, load_qa_requests
from fit_unlearn.data.sources import load_documents
from fit_unlearn.errors import DataError

AUTHORS = {
    "forget10": ["Ann Ash", "Bo Birch"],
    "retain90": ["Cy Cedar", "Di Dogwood", "Ed Elm"],
    "holdout10": ["Fay Fir"],
}
PER_AUTHOR = 20  # TOFU: 20 question / answer pairs per fictitious author


def _row(split: str, author: str, k: int) -> dict:
    row = {"question": f"What is fact {k} about {author}?", "answer": f"{author} fact {k} is {split} {k * 7}."}
    if split == "forget10":  # a paraphrase on every other row (the others: null or empty), as some variants carry
        row["paraphrased_question"] = f"Tell me fact number {k} of {author}." if k % 2 == 0 else [None, ""][k % 4 // 2]
    row["author"] = author
    return row


def _rows(split: str, authors=None, n: int = PER_AUTHOR) -> list[dict]:
    return [_row(split, a, k) for a in (authors or AUTHORS[split]) for k in range(n)]


def _expected(split: str, key: str, author: str, n: int = PER_AUTHOR) -> Document:
    """The document of one author, spelled out independently of the loader."""
    rows = [_row(split, author, k) for k in range(n)]
    text = "\n\n".join(f"Question: {r['question']}\nAnswer: {r['answer']}" for r in rows)
    para = tuple(QA(r["paraphrased_question"], r["answer"]) for r in rows if r.get("paraphrased_question"))
    return Document(f"{split}-{key}", text, "qa", tuple(QA(r["question"], r["answer"]) for r in rows), para)


def write_dataset(root, form: str, splits: dict[str, list[dict]]):
    """A data set in one of the forms users hold (the suite writes it; nothing is downloaded)."""
    from datasets import Dataset, DatasetDict

    root.mkdir(parents=True, exist_ok=True)
    ds = {name: Dataset.from_list(rows) for name, rows in splits.items()}
    for name, d in ds.items():
        if form == "split_folders":  # one save_to_disk Dataset per split
            d.save_to_disk(str(root / name))
        elif form == "parquet":
            d.to_parquet(str(root / f"{name}.parquet"))
        elif form == "hub_shards":  # the Hub's file names, under data/
            d.to_parquet(str(root / "data" / f"{name}-00000-of-00001.parquet"))
        elif form == "json_lines":  # TOFU's own files: one JSON object per line
            d.to_json(str(root / f"{name}.json"))
        elif form == "json_list":
            (root / f"{name}.json").write_text(json.dumps(splits[name]))
    if form == "save_to_disk":
        DatasetDict(ds).save_to_disk(str(root))
    return root


def _tofu(root, form="save_to_disk"):
    return write_dataset(root, form, {name: _rows(name) for name in AUTHORS})


FORMS = ["save_to_disk", "split_folders", "parquet", "hub_shards", "json_lines", "json_list"]


@pytest.mark.parametrize("form", FORMS)
def test_every_form_is_recognised_and_read_into_one_document_per_author(tmp_path, form):
    data = load_documents(_tofu(tmp_path / "tofu", form))  # recognised: no option given
    assert data.forget == [_expected("forget10", "0000", "Ann Ash"), _expected("forget10", "0001", "Bo Birch")]
    assert data.retain == [_expected("retain90", f"{i:04d}", a) for i, a in enumerate(AUTHORS["retain90"])]
    assert data.holdout == [_expected("holdout10", "0000", "Fay Fir")]
    assert data.source == str(tmp_path / "tofu")


def test_exact_text_qa_and_paraphrases_of_a_document(tmp_path):
    doc = load_documents(_tofu(tmp_path / "tofu", "parquet")).forget[0]
    assert doc.text.startswith(
        "Question: What is fact 0 about Ann Ash?\nAnswer: Ann Ash fact 0 is forget10 0.\n\n"
        "Question: What is fact 1 about Ann Ash?\nAnswer: Ann Ash fact 1 is forget10 7.\n\nQuestion: "
    )
    assert doc.qa[1] == QA("What is fact 1 about Ann Ash?", "Ann Ash fact 1 is forget10 7.")
    assert len(doc.qa) == 20 and len(doc.paraphrases) == 10  # only the rows that carry one
    assert doc.paraphrases[1] == QA("Tell me fact number 2 of Ann Ash.", "Ann Ash fact 2 is forget10 14.")
    assert doc.training_view().paraphrases == ()  # evaluation-only, as every paraphrase


def test_group_by_a_column_keeps_first_appearance_order_and_row_order(tmp_path):
    # rows of two subjects interleaved, three pairs each
    mixed = [_row("forget10", a, k) for k in range(3) for a in ("Bo Birch", "Ann Ash")]
    splits = {"forget10": mixed, "retain90": _rows("retain90", n=3)}
    root = write_dataset(tmp_path / "d", "parquet", splits)
    data = load_documents(root, qa=QADatasetConfig(group_by="author"))
    assert [d.id for d in data.forget] == ["forget10-Bo Birch", "forget10-Ann Ash"]
    assert data.forget[0] == _expected("forget10", "Bo Birch", "Bo Birch", n=3)
    assert [d.id for d in data.retain] == ["retain90-Cy Cedar", "retain90-Di Dogwood", "retain90-Ed Elm"]
    assert data.holdout == []  # the default holdout split is optional


def test_block_size_and_split_names_are_options(tmp_path):
    root = _tofu(tmp_path / "tofu", "json_lines")
    data = load_documents(root, qa=QADatasetConfig(group_size=10, retain="holdout10", holdout=None))
    assert [d.id for d in data.forget] == [f"forget10-{i:04d}" for i in range(4)]
    assert [len(d.qa) for d in data.forget] == [10] * 4
    assert data.forget[1].qa[0] == QA("What is fact 10 about Ann Ash?", "Ann Ash fact 10 is forget10 70.")
    assert [d.id for d in data.retain] == ["holdout10-0000", "holdout10-0001"] and data.holdout == []


def test_one_file_per_split(tmp_path):
    root = _tofu(tmp_path / "tofu", "parquet")
    _tofu(tmp_path / "js", "json_lines")
    data = load_documents(forget=root / "forget10.parquet", retain=tmp_path / "js" / "retain90.json")
    assert [d.id for d in data.forget] == ["forget-0000", "forget-0001"]  # named after the role, as PCH files
    assert data.forget[0].qa == _expected("forget10", "0000", "Ann Ash").qa
    assert [d.id for d in data.retain] == ["retain-0000", "retain-0001", "retain-0002"]


def test_this_library_s_data_directory_is_still_read_as_before(tmp_path):
    (tmp_path / "forget.jsonl").write_text(json.dumps({"id": "a", "text": "Title: T\n\nAbstract: A b."}) + "\n")
    (tmp_path / "retain.jsonl").write_text(json.dumps({"id": "b", "text": "Title: U\n\nAbstract: C d."}) + "\n")
    data = load_documents(tmp_path)
    assert [d.id for d in data.forget] == ["a"] and data.forget[0].domain == "paper"


# ---- bad input: one line that names the problem and the fix -------------------------------------------------
def _error(root, **options) -> str:
    with pytest.raises(DataError) as e:
        load_documents(root, qa=QADatasetConfig(**options) if options else None)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_missing_question_column_lists_the_columns(tmp_path):
    rows = [{"prompt": r["question"], "answer": r["answer"]} for r in _rows("forget10")]
    root = write_dataset(tmp_path / "d", "parquet", {"forget10": rows, "retain90": _rows("retain90")})
    msg = _error(root)
    assert "forget10.parquet: no 'question' column (columns: prompt, answer)" in msg and "rename" in msg


def test_group_by_a_column_that_does_not_exist(tmp_path):
    msg = _error(_tofu(tmp_path / "tofu", "parquet"), group_by="writer")
    assert "no column 'writer' to group by (columns: question, answer, paraphrased_question, author)" in msg
    assert "--group-by" in msg and "--group-size" in msg


def test_rows_that_do_not_divide_into_blocks(tmp_path):
    msg = _error(_tofu(tmp_path / "tofu"), group_size=30)
    assert "[forget10]: 40 rows do not divide into requests of 30 rows (the last would have 10)" in msg
    assert "--group-by COLUMN" in msg


def test_missing_split_lists_the_splits_found(tmp_path):
    msg = _error(_tofu(tmp_path / "tofu", "json_lines"), forget="forget05")
    assert "no forget split 'forget05' (splits found: forget10, holdout10, retain90)" in msg
    assert "--forget-split" in msg
    msg = _error(_tofu(tmp_path / "t2", "parquet"), holdout="holdout05")  # asked for: no longer optional
    assert "no holdout split 'holdout05'" in msg
    # QA files under other names, no option given: still read as a data set, to say which splits are there
    root = write_dataset(tmp_path / "t3", "parquet", {"forget": _rows("forget10"), "retain": _rows("retain90")})
    assert "no forget split 'forget10' (splits found: forget, retain)" in _error(root)
    assert [d.id for d in load_documents(root, qa=QADatasetConfig(forget="forget", retain="retain")).forget] == [
        "forget-0000",
        "forget-0001",
    ]


def test_empty_answer_and_missing_subject(tmp_path):
    rows = _rows("forget10")
    rows[3] = {**rows[3], "answer": "  "}
    root = write_dataset(tmp_path / "d", "save_to_disk", {"forget10": rows, "retain90": _rows("retain90")})
    assert "[forget10]: row 3: 'answer' is empty; every row needs a non-empty string question" in _error(root)
    rows = _rows("forget10")
    rows[5] = {**rows[5], "author": None}
    root = write_dataset(tmp_path / "e", "json_lines", {"forget10": rows, "retain90": _rows("retain90")})
    assert "row 5 has no 'author' value" in _error(root, group_by="author")


def test_a_retain_split_that_holds_the_forget_subjects_is_refused(tmp_path):
    full = _rows("forget10") + _rows("retain90")
    root = write_dataset(tmp_path / "d", "parquet", {"forget10": _rows("forget10"), "full": full})
    msg = _error(root, retain="full")
    assert "2 forget subject(s) are also in the retain split, e.g. 'forget10-0000'" in msg and "retain90" in msg


def test_unreadable_files_and_a_single_split_given_as_the_data_directory(tmp_path):
    root = tmp_path / "d"
    root.mkdir()
    (root / "forget10.parquet").write_bytes(b"not parquet")
    (root / "retain90.parquet").write_bytes(b"not parquet")
    assert "forget10.parquet: not readable as parquet rows (ArrowInvalid" in _error(root)
    single = write_dataset(tmp_path / "s", "split_folders", {"forget10": _rows("forget10")}) / "forget10"
    assert "holds one split of a Hugging Face data set; give its forget and retain splits" in _error(single)


def test_cli_errors_are_one_line_with_exit_code_2(tmp_path, capsys):
    root = _tofu(tmp_path / "tofu", "parquet")
    out = tmp_path / "p"
    for extra, expected in (
        (["--group-by", "writer"], "no column 'writer' to group by"),
        (["--group-by", "author", "--group-size", "5"], "give --group-by COLUMN"),
        (["--forget-split", "nope"], "no forget split 'nope'"),
    ):
        code = main(["prepare", "--data", str(root), "--out", str(out), "--model", "nowhere", *extra])
        err = capsys.readouterr().err
        assert code == 2 and expected in err and "Traceback" not in err, err
        assert not out.exists()


# ---- requests from a data set, and prepare / run on a tiny model ----------------------------------------------
def test_requests_from_a_data_set_are_its_forget_documents(tmp_path):
    from fit_unlearn.engine.config import StreamConfig
    from fit_unlearn.engine.streams import check_source, open_stream

    root = _tofu(tmp_path / "tofu", "hub_shards")
    cfg = StreamConfig(source=str(root), dataset=QADatasetConfig(group_by="author"))
    check_source(cfg)
    items = [doc for _, doc in open_stream(cfg, [])]
    assert [d.id for d in items] == ["forget10-Ann Ash", "forget10-Bo Birch"]
    assert items == load_documents(root, qa=QADatasetConfig(group_by="author")).forget
    one = [d for _, d in open_stream(StreamConfig(source=str(root / "data" / "forget10-00000-of-00001.parquet")), [])]
    assert [d.id for d in one] == ["forget-0000", "forget-0001"]
    small = StreamConfig(source=str(root), max_request_chars=100)  # an oversized request is a bad request
    assert [type(d).__name__ for _, d in open_stream(small, [])] == ["BadRequest", "BadRequest"]
    assert load_qa_requests(tmp_path) is None  # not a data set: other sources take it
    with pytest.raises(DataError, match="not a Hugging Face QA data set"):
        check_source(StreamConfig(source=str(tmp_path)))


def test_prepare_and_run_on_a_tofu_layout_data_set(tmp_path, tiny_model_dir, capsys):
    from fit_unlearn.evaluation import Reference
    from fit_unlearn.prepare import PrepareConfig, prepare, prepared_data
    from fit_unlearn.training import FinetuneConfig

    root = write_dataset(tmp_path / "tofu", "save_to_disk", {name: _rows(name, n=2) for name in AUTHORS})
    qa = QADatasetConfig(group_by="author")
    expected = load_documents(root, qa=qa)
    prepared = tmp_path / "prep"
    recipe = FinetuneConfig(lr=1e-2, epochs=1, batch_size=8)
    prepare(expected, prepared, PrepareConfig(model=str(tiny_model_dir), recipe=recipe, probe_n=2), progress=False)
    data = prepared_data(prepared)
    assert data.forget == expected.forget and data.holdout == expected.holdout  # paraphrases kept for evaluation
    assert data.retain == expected.retain
    assert Reference.load(prepared).forget_ids == ["forget10-Ann Ash", "forget10-Bo Birch"]
    assert json.loads((prepared / "prepare.json").read_text())["paraphrase"] is not None  # they were scored

    config = tmp_path / "run.yaml"
    config.write_text("update: {epochs: 1, retain_batch_size: 1}\neval: {every: null, at_end: false}\n")
    out = tmp_path / "run"
    args = ["run", "--config", config, "--prepared", prepared, "--out", out, "--objective", "ga"]
    args += ["--requests", root, "--group-by", "author", "--limit", 1]
    assert main([str(a) for a in args]) == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    assert [r["id"] for r in results["requests"]] == ["forget10-Ann Ash"]  # the prepared document's id
