"""Sources of deletion requests: the prepared forget split, a JSONL file, a Hugging Face QA data set (its
forget split, one request per subject: :mod:`fit_unlearn.data.hf`), or a watched directory.

Each source yields ``(position, request_or_error)``.  The engine keeps its progress by each item's identity
(:func:`item_key`: a request's id and content hash, a bad line's bytes), not by its position in the source,
so a resumed run skips exactly what its last checkpoint holds even when a watched directory gained a file
with an earlier name or lines were appended to a file already read."""

from __future__ import annotations

import codecs
import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from fit_unlearn.data.documents import Document, _doc_from_obj, _with_qa
from fit_unlearn.data.hf import load_qa_requests
from fit_unlearn.data.streams import stream_order
from fit_unlearn.errors import DataError, RequestError


@dataclass
class BadRequest:
    reason: str
    id: str | None = None
    key: str | None = None  #: identity of the bad item (its raw bytes), see :func:`item_key`


def item_key(item) -> str:
    """The identity of a stream item: ``doc:<id>:<content hash>``, or ``bad:<sha256 of the raw line>``."""
    if isinstance(item, BadRequest):
        return item.key or f"bad:{hashlib.sha256(item.reason.encode()).hexdigest()}"
    return f"doc:{item.id}:{item.content_hash}"


def validate_request(doc: Document, max_chars: int, where: str = "request") -> Document:
    if not doc.id or not str(doc.id).strip():
        raise RequestError(f"{where}: request has an empty id")
    if not doc.text.strip():
        raise RequestError(f"{where}: request {doc.id!r} is empty or whitespace-only; nothing to unlearn")
    if len(doc.text) > max_chars:
        raise RequestError(
            f"{where}: request {doc.id!r} has {len(doc.text):,} characters, over the limit of "
            f"{max_chars:,} (stream.max_request_chars); split it into several requests"
        )
    return doc


def parse_request_line(raw: bytes, where: str, max_chars: int) -> Document:
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RequestError(f"{where}: not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})") from None
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise RequestError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
    try:
        doc = _doc_from_obj(obj, where, max_chars=10**12)
    except DataError as e:
        raise RequestError(str(e)) from None
    return _with_qa(validate_request(doc, max_chars, where))


def jsonl_requests(path: Path, max_chars: int) -> Iterator[tuple[int, Document | BadRequest]]:
    if not path.exists():
        raise DataError(f"{path}: request file not found")
    pos = 0
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            item = _line_item(raw, lineno, path, max_chars)
            if item is not None:
                yield pos, item
                pos += 1


def _line_item(raw: bytes, lineno: int, path: Path, max_chars: int) -> Document | BadRequest | None:
    """One line of a request file: a request, a bad request, or None for a blank line."""
    if lineno == 1:  # read as "utf-8-sig": a leading byte-order mark (Notepad, Excel) is not JSON
        raw = raw.removeprefix(codecs.BOM_UTF8)
    if not raw.strip():
        return None
    raw = raw.rstrip(b"\r\n")
    try:
        return parse_request_line(raw, f"{path}:{lineno}", max_chars)
    except RequestError as e:
        return BadRequest(str(e), key=f"bad:{hashlib.sha256(raw).hexdigest()}")


def watched_requests(
    directory: Path, max_chars: int, idle_exit: float | None, poll: float = 0.5
) -> Iterator[tuple[int, Document | BadRequest]]:
    """Requests from the files ``*.jsonl`` in ``directory``, followed as they grow: each poll reads, file by
    file in name order, the complete lines not read yet (new files and lines appended to files already
    read).  A last line without a newline is read once its file has not grown for one poll.  Write a file
    as ``x.jsonl.tmp`` and rename it, or append whole lines."""
    if not directory.is_dir():
        raise DataError(f"{directory}: watch directory not found")
    read: dict[str, tuple[int, int]] = {}  # file name -> (bytes consumed, lines consumed)
    sizes: dict[str, int] = {}
    pos, idle_since = 0, time.monotonic()
    while True:
        got = False
        for p in sorted(directory.glob("*.jsonl")):
            size = p.stat().st_size
            offset, lineno = read.get(p.name, (0, 0))
            if size <= offset:
                continue
            settled = sizes.get(p.name) == size  # unchanged since the last poll: a final line is complete
            sizes[p.name] = size
            with open(p, "rb") as f:
                f.seek(offset)
                chunk = f.read(size - offset)
            lines = chunk.split(b"\n")
            tail = lines.pop()  # b"" when the chunk ends with a newline
            if tail and settled:
                lines.append(tail)
                tail = b""
            for raw in lines:
                lineno += 1
                offset += len(raw) + 1
                item = _line_item(raw, lineno, p, max_chars)
                if item is not None:
                    yield pos, item
                    pos += 1
                    got = True
            if tail == b"" and lines and not chunk.endswith(b"\n"):
                offset -= 1  # the settled last line had no newline
            read[p.name] = (offset, lineno)
        if got:
            idle_since = time.monotonic()
        elif idle_exit is not None and time.monotonic() - idle_since >= idle_exit:
            return
        else:
            time.sleep(poll)


def forget_requests(docs: list[Document]) -> Iterator[tuple[int, Document | BadRequest]]:
    yield from enumerate(docs)


def dataset_requests(docs: list[Document], max_chars: int) -> Iterator[tuple[int, Document | BadRequest]]:
    """The documents of a QA data set in its order; one over ``max_chars`` is a bad request."""
    for pos, doc in enumerate(docs):
        try:
            yield pos, validate_request(doc, max_chars, f"request {pos}")
        except RequestError as e:
            yield pos, BadRequest(str(e), id=doc.id, key=f"bad:{item_key(doc)}")


def _dataset_documents(cfg) -> list[Document] | None:
    """The requests of a source that is a Hugging Face QA data set (read and checked now), else None."""
    return load_qa_requests(Path(cfg.source), cfg.dataset, max_chars=10**12)


def check_source(cfg) -> None:
    """Refuse, before any work, a ``stream.source`` that cannot deliver a request: a request file that is
    missing, a directory, or holds no requests (empty or whitespace-only: a run over it would apply nothing
    and still write a full checkpoint), or a watch directory that is missing."""
    src = cfg.source
    if src == "forget":
        return
    if src.startswith("watch:"):
        if not Path(src[6:]).is_dir():
            raise DataError(f"{src[6:]}: watch directory not found; create it or point --watch at another one")
        return
    path = Path(src)
    if not path.exists():
        raise DataError(f"{path}: request file not found; point --requests (stream.source) at a JSONL file")
    if _dataset_documents(cfg) is not None:
        return
    if path.is_dir():
        raise DataError(
            f"{path}: is a directory but not a Hugging Face QA data set (no split {cfg.dataset.forget!r}: name it "
            f"with --forget-split); give a JSONL file of requests, or watch it with --watch {path}"
        )
    if _blank(path):
        raise DataError(
            f"{path}: request file holds no requests (empty or whitespace-only); write one JSON object per line, "
            '{"id": ..., "text": ...}, or point --requests (stream.source) at another file'
        )


def _blank(path: Path) -> bool:
    """True if the file holds nothing but whitespace (after a leading byte-order mark)."""
    with open(path, "rb") as f:
        block = f.read(1 << 16).removeprefix(codecs.BOM_UTF8)
        while block:
            if block.strip():
                return False
            block = f.read(1 << 16)
    return True


def open_stream(cfg, forget: list[Document]) -> Iterator[tuple[int, Document | BadRequest]]:
    """The stream a run configuration's ``stream`` section names: ``forget`` (the prepared forget split in
    its seeded order), ``watch:DIR``, a Hugging Face QA data set (in its order) or a JSONL file; at most
    ``cfg.limit`` items.  The source is checked
    now (:func:`check_source`), not at the first item."""
    check_source(cfg)
    src = cfg.source
    if src == "forget":
        items = forget_requests(stream_order(forget, cfg.order_seed))
    elif src.startswith("watch:"):
        items = watched_requests(Path(src[6:]), cfg.max_request_chars, cfg.watch_idle_exit)
    elif (docs := _dataset_documents(cfg)) is not None:
        items = dataset_requests(docs, cfg.max_request_chars)
    else:
        items = jsonl_requests(Path(src), cfg.max_request_chars)
    return _first(items, cfg.limit)


def _first(items: Iterator, limit: int | None) -> Iterator:
    for pos, item in items:
        if limit is not None and pos >= limit:
            return
        yield pos, item
