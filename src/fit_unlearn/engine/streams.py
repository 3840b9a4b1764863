"""Sources of deletion requests: the prepared forget split, a JSONL file, or a watched directory.

Each source yields ``(position, request_or_error)``; positions are stable across restarts so that a
resumed run continues exactly where its last checkpoint was taken."""

from __future__ import annotations

import codecs
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from fit_unlearn.data.documents import Document, _doc_from_obj, _with_qa
from fit_unlearn.data.streams import stream_order
from fit_unlearn.errors import DataError, RequestError


@dataclass
class BadRequest:
    reason: str
    id: str | None = None


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
            if lineno == 1:  # read as "utf-8-sig": a leading byte-order mark (Notepad, Excel) is not JSON
                raw = raw.removeprefix(codecs.BOM_UTF8)
            if not raw.strip():
                continue
            try:
                yield pos, parse_request_line(raw.rstrip(b"\r\n"), f"{path}:{lineno}", max_chars)
            except RequestError as e:
                yield pos, BadRequest(str(e))
            pos += 1


def watched_requests(
    directory: Path, max_chars: int, idle_exit: float | None, poll: float = 0.5
) -> Iterator[tuple[int, Document | BadRequest]]:
    """Files ``*.jsonl`` in ``directory``, in name order, each read once complete (name it ``x.jsonl.tmp``
    while writing, then rename).  New files must sort after the ones already there (e.g. timestamps)."""
    if not directory.is_dir():
        raise DataError(f"{directory}: watch directory not found")
    seen: set[str] = set()
    pos, idle_since = 0, time.monotonic()
    while True:
        new = sorted(p for p in directory.glob("*.jsonl") if p.name not in seen)
        for p in new:
            seen.add(p.name)
            for _, item in jsonl_requests(p, max_chars):
                yield pos, item
                pos += 1
            idle_since = time.monotonic()
        if not new:
            if idle_exit is not None and time.monotonic() - idle_since >= idle_exit:
                return
            time.sleep(poll)


def forget_requests(docs: list[Document]) -> Iterator[tuple[int, Document | BadRequest]]:
    yield from enumerate(docs)


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
    if path.is_dir():
        raise DataError(f"{path}: is a directory; give a JSONL file of requests, or watch it with --watch {path}")
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
    its seeded order), ``watch:DIR`` or a JSONL file; at most ``cfg.limit`` items.  The source is checked
    now (:func:`check_source`), not at the first item."""
    check_source(cfg)
    src = cfg.source
    if src == "forget":
        items = forget_requests(stream_order(forget, cfg.order_seed))
    elif src.startswith("watch:"):
        items = watched_requests(Path(src[6:]), cfg.max_request_chars, cfg.watch_idle_exit)
    else:
        items = jsonl_requests(Path(src), cfg.max_request_chars)
    return _first(items, cfg.limit)


def _first(items: Iterator, limit: int | None) -> Iterator:
    for pos, item in items:
        if limit is not None and pos >= limit:
            return
        yield pos, item
