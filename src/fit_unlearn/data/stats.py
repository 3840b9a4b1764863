"""Per-split statistics of a data set: documents per domain, QA pairs and mean length (``fit-unlearn data stats``)."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from fit_unlearn.data.documents import DEFAULT_MAX_DOC_CHARS, Document, load_pch_dir, load_split_file


def load_any(path: str | os.PathLike, *, max_chars: int = DEFAULT_MAX_DOC_CHARS) -> dict[str, list[Document]]:
    """The splits of a data directory (forget, retain, holdout), or one file as a split named after its stem
    (a PCH ``.json`` file is read as a forget split)."""
    path = Path(path)
    if path.is_dir():
        s = load_pch_dir(path, max_chars=max_chars)
        return {"forget": s.forget, "retain": s.retain, "holdout": s.holdout}
    return {path.stem: load_split_file(path, "forget" if path.suffix == ".json" else path.stem, max_chars=max_chars)}


def split_stats(splits: dict[str, list[Document]]) -> dict:
    """{"domains": every domain, sorted; "splits": {split: {"domains": {domain: documents}, "documents",
    "qa_pairs", "mean_chars"}}} for the non-empty splits (a document without a domain counts as "other")."""
    domains = sorted({d.domain or "other" for docs in splits.values() for d in docs})
    out: dict = {"domains": domains, "splits": {}}
    for split, docs in splits.items():
        if not docs:
            continue
        out["splits"][split] = {
            "domains": dict(Counter(d.domain or "other" for d in docs)),
            "documents": len(docs),
            "qa_pairs": sum(len(d.qa) for d in docs),
            "mean_chars": sum(len(d.text) for d in docs) / len(docs),
        }
    return out


def data_stats(path: str | os.PathLike, *, max_chars: int = DEFAULT_MAX_DOC_CHARS) -> dict:
    """:func:`split_stats` of a data directory or file, with its path as ``source``."""
    return {"source": str(path), **split_stats(load_any(path, max_chars=max_chars))}
