"""Where documents come from: the one entry point that recognises a data directory or split file and hands it
to its reader (this library's JSONL and PCH files, :mod:`fit_unlearn.data.documents`; Hugging Face question /
answer data sets in TOFU's layout, :mod:`fit_unlearn.data.hf`).  It sits above both readers, so neither needs
the other."""

from __future__ import annotations

import os
from pathlib import Path

from fit_unlearn.data import hf
from fit_unlearn.data.documents import (
    DEFAULT_MAX_DOC_CHARS,
    DataSplits,
    Document,
    check_unique_across,
    load_pch_dir,
    read_split_file,
)
from fit_unlearn.data.hf import QADatasetConfig
from fit_unlearn.errors import DataError


def load_split_file(
    path: str | os.PathLike, split: str = "forget", qa: QADatasetConfig | None = None, **kw
) -> list[Document]:
    """One split: this library's JSONL, a PCH ``.json`` list of strings, or the rows of a Hugging Face QA data
    set (:func:`fit_unlearn.data.hf.is_qa_split`: parquet, JSON rows with ``question`` and no ``text``, or a
    ``save_to_disk`` directory), grouped as ``qa`` says into documents with ids ``<split>-<key>``."""
    path = Path(path)
    if hf.is_qa_split(path):
        return hf.load_qa_split(path, split, qa, **kw)
    return read_split_file(path, split, **kw)


def load_documents(
    data: str | os.PathLike | None = None,
    *,
    forget: str | os.PathLike | None = None,
    retain: str | os.PathLike | None = None,
    holdout: str | os.PathLike | None = None,
    max_chars: int = DEFAULT_MAX_DOC_CHARS,
    qa: QADatasetConfig | None = None,
) -> DataSplits:
    """Load splits from a data directory (``data``) or from one file per split.

    ``data`` is this library's data directory, or a Hugging Face QA data set in TOFU's layout: recognised
    (:func:`fit_unlearn.data.hf.is_qa_dataset`), or read as one whenever ``qa`` is given, with its split names
    and grouping.  Split files may be Hugging Face QA rows too (:func:`load_split_file`), grouped as ``qa``
    says (default: 20 rows per subject)."""
    if data is not None:
        if forget or retain or holdout:
            raise DataError("give either a data directory or --forget/--retain files, not both")
        if hf.is_saved_dataset(data):
            raise DataError(
                f"{data}: holds one split of a Hugging Face data set; give its forget and retain splits as "
                "--forget PATH --retain PATH, or save them together (DatasetDict.save_to_disk) and pass that directory"
            )
        if qa is not None or hf.is_qa_dataset(data) or (Path(data).is_dir() and hf.is_qa_split(data)):
            return hf.load_qa_dataset(data, qa, max_chars=max_chars)  # the last: says which splits it found
        return load_pch_dir(data, max_chars=max_chars)
    if forget is None or retain is None:
        raise DataError("no data given: pass a data directory (--data DIR) or both --forget and --retain files")
    found = {
        "forget": load_split_file(forget, "forget", qa, max_chars=max_chars),
        "retain": load_split_file(retain, "retain", qa, max_chars=max_chars),
    }
    if holdout is not None:
        found["holdout"] = load_split_file(holdout, "holdout", qa, max_chars=max_chars)
    check_unique_across(found, Path(forget).parent)
    hf.check_disjoint(found, Path(forget).parent)
    return DataSplits(found["forget"], found["retain"], found.get("holdout", []), source=f"{forget},{retain}")


__all__ = ["load_documents", "load_split_file"]
