"""Append-only, fsync'd JSONL journal of a run.

Events: ``start`` (config hash), ``received`` (id, content hash, stream position), ``applied`` (the
per-request record), ``redundant`` (FIT found nothing new: no update), ``rejected`` (bad request and
why), ``checkpoint`` (position, directory: every request applied before it is now durable),
``rolled_back`` (applied after the last checkpoint, lost in a crash, to be applied again), ``eval``.
A request is *committed* once a checkpoint follows its ``applied`` event; replaying the journal after a
crash therefore tells exactly which requests to apply again, and none is applied twice in the final model.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from fit_unlearn.errors import JournalError
from fit_unlearn.layout import RunDir

log = logging.getLogger(__name__)


class Journal:
    def __init__(self, path: str | Path, writer: bool = True):
        self.path = Path(path)
        self.writer = writer
        self.events: list[dict] = []
        if self.path.exists():
            self.events = self._read()
        self._fh = open(self.path, "a", encoding="utf-8") if writer else None  # noqa: SIM115

    def _read(self) -> list[dict]:
        events, good_bytes = [], 0
        raw = self.path.read_bytes()
        for lineno, line in enumerate(raw.split(b"\n"), start=1):
            if not line.strip():
                good_bytes += len(line) + 1
                continue
            try:
                events.append(json.loads(line))
                good_bytes += len(line) + 1
            except json.JSONDecodeError:
                if raw[good_bytes + len(line) :].strip():
                    raise JournalError(
                        f"{self.path}:{lineno}: corrupt journal line in the middle of the file; "
                        "the run cannot be resumed safely (start a new --out)"
                    ) from None
                log.warning("%s: dropping a torn last line (crash while writing)", self.path)
                if self.writer:
                    with open(self.path, "r+b") as f:
                        f.truncate(min(good_bytes, len(raw)))
                break
        return events

    def append(self, event: str, **fields) -> dict:
        rec = {"event": event, "time": time.time(), **fields}
        self.events.append(rec)
        if self._fh is not None:
            self._fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
            self._fh.flush()
            os.fsync(self._fh.fileno())
        return rec

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    # ---- replay -------------------------------------------------------------------------------------
    @property
    def start(self) -> dict | None:
        return next((e for e in self.events if e["event"] == "start"), None)

    def last_checkpoint(self) -> dict | None:
        return next((e for e in reversed(self.events) if e["event"] == "checkpoint"), None)

    def kept_evaluations(self) -> set[int]:
        """t of every evaluation a resume keeps: journaled, at or before the last checkpoint (the engine redoes
        the ones after it, as it replays their requests)."""
        ck = self.last_checkpoint()
        last = ck["t"] if ck is not None and "t" in ck else 0
        return {e["t"] for e in self.events if e["event"] == "eval" and e["t"] <= last}

    def committed_ids(self) -> dict[str, int]:
        """id -> stream position of requests applied (or found redundant) before the last checkpoint."""
        ck = self.last_checkpoint()
        if ck is None:
            return {}
        out, pending = {}, {}
        for e in self.events:
            if e["event"] in ("applied", "redundant"):
                pending[e["id"]] = e["position"]
            elif e["event"] == "rolled_back":
                pending.pop(e["id"], None)
            elif e["event"] == "checkpoint":
                out.update(pending)
                pending = {}
            if e is ck:
                break
        return out

    def uncommitted(self) -> list[dict]:
        """applied / redundant events after the last checkpoint that no ``rolled_back`` event has cancelled
        yet (lost if the process died).  Each ``rolled_back`` cancels one application, the earliest live one
        of its id, so any number of crashes between the same two checkpoints is counted exactly."""
        ck = self.last_checkpoint()
        after = self.events[self.events.index(ck) + 1 :] if ck else self.events
        live: list[dict] = []
        for e in after:
            if e["event"] in ("applied", "redundant"):
                live.append(e)
            elif e["event"] == "rolled_back":
                hit = next((x for x in live if x["id"] == e["id"]), None)
                if hit is not None:
                    live.remove(hit)
        return live

    def applied_counts(self) -> dict[str, int]:
        """How many times each id is in the final model: applied events not rolled back."""
        counts: dict[str, int] = {}
        for e in self.events:
            if e["event"] in ("applied", "redundant"):
                counts[e["id"]] = counts.get(e["id"], 0) + 1
            elif e["event"] == "rolled_back":
                counts[e["id"]] -= 1
        return {k: v for k, v in counts.items() if v}


def request_events(run: str | Path | RunDir, request_id: str) -> list[dict]:
    """Every journal event of one request of a run directory, in order (what ``fit-unlearn receipt`` prints)."""
    path = RunDir.of(run).journal
    if not path.exists():
        raise JournalError(f"{path}: no journal; pass --run with a run directory")
    events = [e for e in Journal(path, writer=False).events if e.get("id") == request_id]
    if not events:
        raise JournalError(f"request {request_id!r} is not in {path}")
    return events
