"""Documents, QA pairs, loaders, synthetic PCH data and request streams."""

from fit_unlearn.data.documents import (
    QA,
    Document,
    data_hash,
    load_pch_dir,
    read_jsonl,
    write_jsonl,
)
from fit_unlearn.data.sources import load_documents

__all__ = ["QA", "Document", "data_hash", "load_documents", "load_pch_dir", "read_jsonl", "write_jsonl"]
