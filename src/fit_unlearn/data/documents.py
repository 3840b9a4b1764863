"""Documents and QA pairs: the one input format of fit-unlearn, and its loaders.

The documented format is JSONL in UTF-8 (a leading byte-order mark is accepted), one document per line::

    {"id": "doc-1", "text": "...", "domain": "personal", "qa": [{"question": "...", "answer": "..."}]}

``domain``, ``qa`` and ``paraphrases`` are optional: when ``qa`` is missing the QA pairs (and their
paraphrases) are derived from the text (:func:`fit_unlearn.data.qa.derive_qa`).  ``paraphrases`` are
questions about the same facts as ``qa`` in other words, in the same ``{question, answer}`` form; they are
never trained on and measure whether knowledge is gone beyond the trained strings.  A *data directory* holds
the splits ``forget``, ``retain``
and optionally ``holdout`` (never trained on; used by membership inference), each either as
``<split>.jsonl`` (this format) or ``<split>.json`` (the PCH layout: a JSON list of strings).

A Hugging Face question / answer data set in TOFU's layout (``save_to_disk`` output, or parquet / JSON files
of ``{question, answer}`` rows) is read by :mod:`fit_unlearn.data.hf`, one document per subject;
:func:`load_documents` recognises it, as a directory or as one split's file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fit_unlearn.data.qa import QA, derive_paraphrases, derive_qa, detect_domain, has_known_fields
from fit_unlearn.errors import DataError

log = logging.getLogger(__name__)

#: Default limit on one document's length, in characters.  Longer documents are refused with a
#: message naming the limit and the option that raises it.
DEFAULT_MAX_DOC_CHARS = 200_000
SPLITS = ("forget", "retain", "holdout")


@dataclass(frozen=True)
class Document:
    id: str
    text: str
    domain: str | None = None
    qa: tuple[QA, ...] = field(default_factory=tuple)
    #: evaluation-only questions about the same facts (never trained on, never part of a request's update)
    paraphrases: tuple[QA, ...] = field(default_factory=tuple)

    def to_json(self) -> dict:
        d = {"id": self.id, "text": self.text}
        if self.domain:
            d["domain"] = self.domain
        if self.qa:
            d["qa"] = [asdict(q) for q in self.qa]
        if self.paraphrases:
            d["paraphrases"] = [asdict(q) for q in self.paraphrases]
        return d

    @classmethod
    def from_json(cls, d: dict) -> Document:
        """The inverse of :meth:`to_json` (no validation: for files this library wrote)."""
        return cls(
            id=d["id"],
            text=d["text"],
            domain=d.get("domain"),
            qa=tuple(QA(q["question"], q["answer"]) for q in d.get("qa", [])),
            paraphrases=tuple(QA(q["question"], q["answer"]) for q in d.get("paraphrases", [])),
        )

    def training_view(self) -> Document:
        """The document as training sees it: paraphrases are evaluation-only."""
        return Document(self.id, self.text, self.domain, self.qa)

    @property
    def content_hash(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


@dataclass
class DataSplits:
    """The forget / retain / holdout documents of one data set and where they came from."""

    forget: list[Document]
    retain: list[Document]
    holdout: list[Document] = field(default_factory=list)
    source: str = ""
    #: retain ids scored for utility (never anchors); the rest of ``retain`` is retain-train.  Set by
    #: :func:`fit_unlearn.prepare.prepared_data` from the split recorded in the prepared directory.
    retain_eval_ids: tuple[str, ...] = ()

    @property
    def retain_train(self) -> list[Document]:
        """Retain documents that anchor training (retain terms, KL, retain profiles, repair steps)."""
        ids = set(self._eval_ids())
        return [d for d in self.retain if d.id not in ids]

    @property
    def retain_eval(self) -> list[Document]:
        """Retain documents on which utility R is scored; no unlearning step ever uses them."""
        ids = set(self._eval_ids())
        return [d for d in self.retain if d.id in ids]

    def _eval_ids(self) -> tuple[str, ...]:
        if not self.retain_eval_ids:
            raise DataError(
                f"{self.source or 'data'}: no retain-train / retain-eval split recorded; run `fit-unlearn "
                "prepare` on it (again: training is not repeated, the split is recorded and the gold models rescored)"
            )
        return self.retain_eval_ids

    def hash(self) -> str:
        """Hash of everything, paraphrases included (what the evaluation reads)."""
        return data_hash(self.forget + self.retain + self.holdout)

    def training_hash(self) -> str:
        """Hash of what training reads (texts and QA pairs, not the evaluation-only paraphrases)."""
        return data_hash([d.training_view() for d in self.forget + self.retain + self.holdout])

    def subset(self, n_forget: int | None, n_retain: int | None, seed: int) -> DataSplits:
        """A seeded subset of the forget and retain splits (holdout is cut to the forget size).  Without a
        holdout split, the retain documents left out of the subset become the holdout: no model is trained on
        them, so they are non-members (the closed loop's target and the MIA need them)."""

        def pick(docs: list[Document], n: int | None, salt: str) -> list[Document]:
            if n is None or n >= len(docs):
                return list(docs)
            if n <= 0:
                raise DataError(f"subset size must be positive, got {n}")
            idx = sorted(random.Random(f"{seed}-{salt}").sample(range(len(docs)), n))
            return [docs[i] for i in idx]

        retain = pick(self.retain, n_retain, "retain")
        holdout = self.holdout
        if not holdout:  # e.g. PCH: the retain documents the subset leaves out were never trained on either
            chosen = {d.id for d in retain}
            holdout = [d for d in self.retain if d.id not in chosen]
        return DataSplits(
            forget=pick(self.forget, n_forget, "forget"),
            retain=retain,
            holdout=pick(holdout, n_forget, "holdout"),
            source=self.source,
        )

    def with_retain_eval(self, ids) -> DataSplits:
        return DataSplits(self.forget, self.retain, self.holdout, self.source, tuple(ids))


def data_hash(docs: Iterable[Document]) -> str:
    h = hashlib.sha256()
    for d in docs:
        h.update(json.dumps(d.to_json(), sort_keys=True, ensure_ascii=False).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()[:16]


def _decode(raw: bytes, path: Path) -> str:
    """UTF-8, with or without a leading byte-order mark (``utf-8-sig``: Notepad and Excel write one)."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        body = e.object  # the bytes after the mark, if any: e.start counts from there
        line = body[: e.start].count(b"\n") + 1
        offset = e.start + len(raw) - len(body)
        raise DataError(
            f"{path}:{line}: not valid UTF-8 (byte 0x{body[e.start]:02x} at offset {offset}); "
            "re-encode the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)"
        ) from None


def _read_text(path: Path) -> str:
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a file")
    raw = path.read_bytes()
    text = _decode(raw, path)
    if not text.strip():
        raise DataError(f"{path}: file is empty; it must hold at least one document")
    return text


def validate_document(doc: Document, where: str, max_chars: int = DEFAULT_MAX_DOC_CHARS) -> Document:
    if not doc.id or not doc.id.strip():
        raise DataError(f"{where}: document has an empty id")
    if not doc.text.strip():
        raise DataError(f"{where}: document {doc.id!r} has empty or whitespace-only text")
    if len(doc.text) > max_chars:
        raise DataError(
            f"{where}: document {doc.id!r} has {len(doc.text):,} characters, over the limit of "
            f"{max_chars:,}; split it into smaller documents or raise --max-doc-chars"
        )
    return doc


def _doc_from_obj(obj: object, where: str, max_chars: int) -> Document:
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object with 'id' and 'text', got {type(obj).__name__}")
    missing = [k for k in ("id", "text") if k not in obj]
    if missing:
        raise DataError(f"{where}: missing field(s) {', '.join(missing)}; each line needs 'id' and 'text'")
    if not isinstance(obj["text"], str):
        raise DataError(f"{where}: 'text' must be a string, got {type(obj['text']).__name__}")
    if not isinstance(obj["id"], str | int):
        raise DataError(f"{where}: 'id' must be a string, got {type(obj['id']).__name__}")
    domain = obj.get("domain")
    if domain is not None and not isinstance(domain, str):
        raise DataError(f"{where}: 'domain' must be a string")
    qa = _qa_list(obj, "qa", where)
    paraphrases = _qa_list(obj, "paraphrases", where)
    doc = Document(id=str(obj["id"]), text=obj["text"], domain=domain, qa=qa, paraphrases=paraphrases)
    return validate_document(doc, where, max_chars)


def _qa_list(obj: dict, key: str, where: str) -> tuple[QA, ...]:
    raw = obj.get(key) or []
    if not isinstance(raw, list):
        raise DataError(f"{where}: {key!r} must be a list of {{question, answer}} objects")
    out = []
    for k, q in enumerate(raw):
        if not isinstance(q, dict) or not isinstance(q.get("question"), str) or not isinstance(q.get("answer"), str):
            raise DataError(f"{where}: {key}[{k}] must be an object with string 'question' and 'answer'")
        if not q["question"].strip() or not q["answer"].strip():
            raise DataError(f"{where}: {key}[{k}] has an empty question or answer")
        out.append(QA(q["question"], q["answer"]))
    return tuple(out)


def read_jsonl(
    path: str | os.PathLike, *, max_chars: int = DEFAULT_MAX_DOC_CHARS, derive: bool = True
) -> list[Document]:
    """Read a JSONL file of documents; derive QA pairs where a document has none."""
    path = Path(path)
    text = _read_text(path)
    docs: list[Document] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(
                f"{where}: not valid JSON ({e.msg} at column {e.colno}); each line must be one JSON object"
            ) from None
        doc = _doc_from_obj(obj, where, max_chars)
        if doc.id in seen:
            raise DataError(f"{where}: duplicate id {doc.id!r} (first seen on line {seen[doc.id]}); ids must be unique")
        seen[doc.id] = lineno
        docs.append(doc)
    return _all_with_qa(docs, path) if derive else docs


def read_pch_json(path: str | os.PathLike, split: str, *, max_chars: int = DEFAULT_MAX_DOC_CHARS) -> list[Document]:
    """Read a PCH-layout JSON list of strings; ids are ``<split>-NNNN``; QA derived from fields."""
    path = Path(path)
    text = _read_text(path)
    try:
        items = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: not valid JSON ({e.msg}); expected a JSON list of strings") from None
    if not isinstance(items, list) or not items:
        raise DataError(f"{path}: expected a non-empty JSON list of document strings")
    docs = []
    for i, item in enumerate(items):
        where = f"{path}[{i}]"
        if not isinstance(item, str):
            raise DataError(f"{where}: expected a string, got {type(item).__name__}")
        docs.append(validate_document(Document(id=f"{split}-{i:04d}", text=item), where, max_chars))
    return _all_with_qa(docs, path)


def _all_with_qa(docs: list[Document], path: Path) -> list[Document]:
    """:func:`_with_qa` for every document of one file, with one warning for all those that have no known field."""
    bare = [d.id for d in docs if not d.qa and not has_known_fields(d.text)]
    if bare:
        log.warning(
            "%s: %d of %d documents have no known field (%s); each is asked to continue its first sentence "
            "(a continuation QA pair); give QA pairs in JSONL documents to ask otherwise",
            path,
            len(bare),
            len(docs),
            ", ".join(bare[:3]) + (", ..." if len(bare) > 3 else ""),
        )
    return [_with_qa(d, warn=False) for d in docs]


def _with_qa(doc: Document, warn: bool = True) -> Document:
    """Fill in the domain, and the QA pairs with their paraphrases when the document brings none.  A
    document that brings its own QA pairs keeps its own paraphrases (none unless given)."""
    domain = doc.domain or detect_domain(doc.text)
    if doc.qa:
        return Document(doc.id, doc.text, domain, doc.qa, doc.paraphrases)
    qa = tuple(derive_qa(doc.text, doc_id=doc.id, warn=warn))
    return Document(doc.id, doc.text, domain, qa, doc.paraphrases or tuple(derive_paraphrases(doc.text)))


def read_split_file(path: str | os.PathLike, split: str, **kw) -> list[Document]:
    """One split in this library's own forms: a PCH ``.json`` list of strings, or JSONL documents."""
    return read_pch_json(path, split, **kw) if Path(path).suffix == ".json" else read_jsonl(path, **kw)


def load_pch_dir(path: str | os.PathLike, *, max_chars: int = DEFAULT_MAX_DOC_CHARS) -> DataSplits:
    """Load a data directory: ``forget``/``retain``/``holdout`` as ``.jsonl`` or PCH ``.json``."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: data directory not found")
    if not path.is_dir():
        raise DataError(f"{path}: expected a data directory holding forget.json(l) and retain.json(l)")
    found: dict[str, list[Document]] = {}
    for split in SPLITS:
        candidates = [path / f"{split}.jsonl", path / f"{split}.json"]
        present = [c for c in candidates if c.exists()]
        if len(present) > 1:
            raise DataError(f"{path}: both {split}.jsonl and {split}.json exist; keep one")
        if present:
            found[split] = read_split_file(present[0], split, max_chars=max_chars)
    for split in ("forget", "retain"):
        if split not in found:
            raise DataError(
                f"{path}: no {split}.jsonl or {split}.json; a data directory needs forget and retain splits "
                "(run `fit-unlearn data synth` for an example), or is a Hugging Face QA data set (TOFU layout: "
                "name its splits with --forget-split / --retain-split)"
            )
    check_unique_across(found, path)
    return DataSplits(found["forget"], found["retain"], found.get("holdout", []), source=str(path))


def check_unique_across(found: dict[str, list[Document]], path: Path) -> None:
    owner: dict[str, str] = {}
    for split, docs in found.items():
        for d in docs:
            if d.id in owner:
                raise DataError(f"{path}: id {d.id!r} appears in both {owner[d.id]} and {split}; ids must be unique")
            owner[d.id] = split


def write_jsonl(docs: Sequence[Document], path: str | os.PathLike) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps(d.to_json(), ensure_ascii=False) + "\n")
    os.replace(tmp, path)
