"""Per-split statistics of a data set: documents per domain, QA pairs and mean length (``fit-unlearn data stats``)."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from fit_unlearn.data.documents import DEFAULT_MAX_DOC_CHARS, Document
from fit_unlearn.data.hf import QADatasetConfig, is_saved_dataset
from fit_unlearn.data.sources import load_documents, load_split_file


def load_any(
    path: str | os.PathLike, *, max_chars: int = DEFAULT_MAX_DOC_CHARS, qa: QADatasetConfig | None = None
) -> dict[str, list[Document]]:
    """The splits of a data directory or a Hugging Face QA data set (forget, retain, holdout), or one file (or
    ``save_to_disk`` folder) as a split named after its stem (a PCH ``.json`` file is read as a forget split);
    ``qa``: how a QA data set is read (:func:`fit_unlearn.data.sources.load_documents`)."""
    path = Path(path)
    if path.is_dir() and not is_saved_dataset(path):
        s = load_documents(path, max_chars=max_chars, qa=qa)
        return {"forget": s.forget, "retain": s.retain, "holdout": s.holdout}
    split = "forget" if path.suffix == ".json" else path.stem
    return {path.stem: load_split_file(path, split, qa, max_chars=max_chars)}


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


def data_stats(
    path: str | os.PathLike, *, max_chars: int = DEFAULT_MAX_DOC_CHARS, qa: QADatasetConfig | None = None
) -> dict:
    """:func:`split_stats` of a data directory, a QA data set or a file, with its path as ``source``."""
    return {"source": str(path), **split_stats(load_any(path, max_chars=max_chars, qa=qa))}
