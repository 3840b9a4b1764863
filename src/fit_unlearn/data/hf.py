"""Hugging Face question / answer data sets in TOFU's layout, read from local files through ``datasets``.

TOFU (Maini et al. 2024) and the data sets built like it hold one question / answer pair per row
(``question``, ``answer``; some variants add ``paraphrased_question`` and other columns, which are ignored)
and name their splits after their role and size: ``forget01/05/10``, ``retain99/95/90``,
``holdout01/05/10``, ``full``...  Nothing is ever fetched from the Hub; the data set is read where the user
keeps it.  The algorithm:

1. **Find each split** (:class:`QADatasetConfig` names them; TOFU's ``forget10`` / ``retain90`` /
   ``holdout10`` by default) in the data set's directory, or in its ``data/`` folder: a split of a
   ``save_to_disk`` ``DatasetDict`` (``dataset_dict.json``); a folder ``<split>/`` (``save_to_disk`` output
   of one ``Dataset``, or holding ``.parquet`` / ``.json`` / ``.jsonl`` files); or the files
   ``<split>.parquet``, ``<split>-NNNNN-of-NNNNN.parquet`` (the Hub's shards), ``<split>.jsonl`` or
   ``<split>.json`` (JSON lines, or one JSON list of row objects).
2. **Read its rows** with ``datasets.load_from_disk`` or ``datasets.load_dataset("parquet" | "json",
   data_files=...)`` into a throwaway cache (nothing is left in the user's Hugging Face cache).
3. **Group the rows into deletion requests**, one per subject: by the value of a column
   (``group_by``, e.g. ``author``; groups in the order their first row appears, rows in their order), or,
   when the data set has no such column (TOFU's own files: 20 consecutive rows per author), in consecutive
   blocks of ``group_size`` rows; the row count must then be a multiple of it.
4. **Make one** :class:`~fit_unlearn.data.documents.Document` **per group**: id ``<split>-<value>``
   (grouped by a column) or ``<split>-<block index, 4 digits>``; text = its pairs in the QA format training
   and scoring use (``Question: ...\\nAnswer: ...``, :data:`fit_unlearn.data.qa.QA_PROMPT`), separated by a
   blank line; ``qa`` = the pairs; ``paraphrases`` = (``paraphrased_question``, ``answer``) for the rows
   that have one (evaluation-only: never trained on); domain ``qa``.

Every problem (no such split, no ``question`` column, a group-by column that does not exist, an empty
answer, a row count that is not a multiple of the block size, forget pairs also in retain) is a one-line
:class:`~fit_unlearn.errors.DataError` that names the fix.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field

from fit_unlearn.data.documents import (
    DEFAULT_MAX_DOC_CHARS,
    DataSplits,
    Document,
    check_unique_across,
    validate_document,
)
from fit_unlearn.data.qa import QA, qa_prompt
from fit_unlearn.errors import DataError
from fit_unlearn.schema import Section

log = logging.getLogger(__name__)

QUESTION, ANSWER, PARAPHRASED_QUESTION = "question", "answer", "paraphrased_question"
DOMAIN = "qa"
#: the files a split's rows may be in, by the ``datasets`` loader that reads them
FORMATS = {".parquet": "parquet", ".jsonl": "json", ".json": "json"}
_SHARD = re.compile(r"-\d+-of-\d+$")  # the Hub's shard suffix: forget10-00000-of-00001.parquet


class QADatasetConfig(Section):
    """How a Hugging Face question / answer data set in TOFU's layout (a ``save_to_disk`` directory, or
    parquet / JSON files) becomes forget / retain / holdout documents, one deletion request per subject."""

    forget: str = "forget10"
    """Split whose subjects are the deletion requests (TOFU: ``forget01``, ``forget05``, ``forget10``)."""
    retain: str = "retain90"
    """Split the model keeps (TOFU: ``retain99``, ``retain95``, ``retain90``, the complements of the forget
    splits)."""
    holdout: str | None = "holdout10"
    """Split no model is trained on (membership inference, the closed loop's target); skipped when the data
    set has no such split unless it was set explicitly; ``null``: none."""
    group_by: str | None = None
    """Column naming each row's subject (e.g. ``author``): one deletion request per value.  ``null``: blocks
    of ``group_size`` consecutive rows."""
    group_size: int = Field(default=20, ge=1)
    """Rows per deletion request when ``group_by`` is ``null`` (TOFU: 20 questions per author)."""

    def grouping(self) -> str:
        return f"by {self.group_by!r}" if self.group_by else f"in blocks of {self.group_size} rows"


@dataclass(frozen=True)
class _Source:
    """Where one split's rows are: a ``save_to_disk`` directory (``fmt`` "disk"; ``key`` the split of a
    DatasetDict) or data files read by ``datasets.load_dataset(fmt)``."""

    fmt: str
    paths: tuple[Path, ...]
    key: str | None = None

    @property
    def where(self) -> str:
        p = self.paths[0] if len(self.paths) == 1 else self.paths[0].parent
        return f"{p} [{self.key}]" if self.key else str(p)


# ---- finding the splits ---------------------------------------------------------------------------------
def _is_saved(path: Path) -> bool:
    """``save_to_disk`` output: one Dataset (``state.json``) or a DatasetDict (``dataset_dict.json``)."""
    return (path / "state.json").is_file() or (path / "dataset_dict.json").is_file()


def _files_in(folder: Path) -> tuple[str, tuple[Path, ...]] | None:
    """The parquet files of a folder, else its JSON(L) files, else None."""
    parquet = sorted(folder.glob("*.parquet"))
    if parquet:
        return "parquet", tuple(parquet)
    js = sorted(p for p in folder.iterdir() if p.suffix in (".json", ".jsonl") and p.is_file())
    return ("json", tuple(js)) if js else None


def _candidates(root: Path, name: str) -> list[_Source]:
    """Every place a split called ``name`` could be in ``root`` (see the module's docstring)."""
    out: list[_Source] = []
    folder = root / name
    if folder.is_dir():
        if _is_saved(folder):
            out.append(_Source("disk", (folder,)))
        elif (found := _files_in(folder)) is not None:
            out.append(_Source(found[0], found[1]))
    if root.is_dir():
        for suffix, fmt in FORMATS.items():
            files = sorted(
                p
                for p in root.iterdir()
                if p.is_file() and p.suffix == suffix and (p.stem == name or _SHARD.sub("", p.stem) == name)
            )
            if files:
                out.append(_Source(fmt, tuple(files)))
    return out


def _split_names(root: Path) -> list[str]:
    """The split names a directory offers (for error messages)."""
    names: set[str] = set()
    for base in (root, root / "data"):
        if (base / "dataset_dict.json").is_file():
            names.update(_dict_splits(base))
        if base.is_dir():
            for p in base.iterdir():
                if p.is_dir() and p.name != "data" and (_is_saved(p) or _files_in(p)):
                    names.add(p.name)
                elif p.is_file() and p.suffix in FORMATS:
                    names.add(_SHARD.sub("", p.stem))
    return sorted(names)


def _dict_splits(root: Path) -> list[str]:
    try:
        splits = json.loads((root / "dataset_dict.json").read_text(encoding="utf-8"))["splits"]
    except (ValueError, KeyError, TypeError, OSError):
        raise DataError(
            f"{root / 'dataset_dict.json'}: not a valid dataset_dict.json (it needs a 'splits' list); write the "
            "data set again with DatasetDict.save_to_disk"
        ) from None
    return [str(s) for s in splits]


def _find_split(root: Path, name: str) -> _Source | None:
    for base in (root, root / "data"):
        if (base / "dataset_dict.json").is_file() and name in _dict_splits(base):
            return _Source("disk", (base,), key=name)
        found = _candidates(base, name)
        if len(found) > 1:
            shown = ", ".join(str(s.paths[0].relative_to(root)) for s in found)
            raise DataError(f"{root}: split {name!r} is in more than one form ({shown}); keep one")
        if found:
            return found[0]
    return None


def is_qa_dataset(path: str | os.PathLike, cfg: QADatasetConfig | None = None) -> bool:
    """True for a directory that holds a Hugging Face QA data set: a ``save_to_disk`` DatasetDict, or the
    forget split ``cfg`` names (TOFU's ``forget10`` by default) in one of the forms above."""
    root = Path(path)
    if not root.is_dir():
        return False
    if (root / "dataset_dict.json").is_file():
        return True
    name = (cfg or QADatasetConfig()).forget
    return any(_candidates(base, name) for base in (root, root / "data"))


def is_saved_dataset(path: str | os.PathLike) -> bool:
    """True for ``Dataset.save_to_disk`` output: one split, not a data set's directory."""
    return (Path(path) / "state.json").is_file()


def is_qa_split(path: str | os.PathLike) -> bool:
    """True for one split's rows: a parquet file, a JSON / JSONL file whose first row has ``question`` and no
    ``text`` (a document of this library's JSONL has ``text``), a ``save_to_disk`` directory, or a folder of
    parquet files or of such JSON files."""
    path = Path(path)
    if path.is_dir():
        if _is_saved(path):
            return True
        found = _files_in(path)
        return found is not None and (found[0] == "parquet" or is_qa_split(found[1][0]))
    if path.suffix == ".parquet":
        return True
    if path.suffix in (".json", ".jsonl") and path.is_file():
        first = _first_json_object(path)
        return isinstance(first, dict) and QUESTION in first and "text" not in first
    return False


def _first_json_object(path: Path) -> object:
    """The first row of a JSON lines file or of a JSON list, or None when it cannot be read as either."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            head = f.read(1 << 16).lstrip()
            if head.startswith("["):
                items = json.loads(head + f.read())
                return items[0] if isinstance(items, list) and items else None
        return json.loads(head.splitlines()[0]) if head else None
    except (ValueError, UnicodeDecodeError, IndexError):
        return None


# ---- reading rows -------------------------------------------------------------------------------------
@contextmanager
def _quiet_datasets() -> Iterator:
    """``datasets``, imported here (it is slow to import), without its progress bars and log lines."""
    import datasets
    from datasets.utils import logging as ds_logging

    bars, level = datasets.is_progress_bar_enabled(), ds_logging.get_verbosity()
    datasets.disable_progress_bars()
    ds_logging.set_verbosity(ds_logging.CRITICAL)
    # local files only: no download-count request to the Hub for the "parquet"/"json" builders, whatever the
    # caller's HF_HUB_OFFLINE says (the library may be used without the CLI, which sets it)
    cfg = datasets.config
    saved = cfg.HF_UPDATE_DOWNLOAD_COUNTS, cfg.HF_HUB_OFFLINE
    cfg.HF_UPDATE_DOWNLOAD_COUNTS, cfg.HF_HUB_OFFLINE = False, True
    try:
        yield datasets
    finally:
        cfg.HF_UPDATE_DOWNLOAD_COUNTS, cfg.HF_HUB_OFFLINE = saved
        ds_logging.set_verbosity(level)
        if bars:
            datasets.enable_progress_bars()


def _read_rows(src: _Source) -> tuple[list[str], list[dict]]:
    """(column names, rows) of one split, read locally through ``datasets``."""
    with _quiet_datasets() as datasets, tempfile.TemporaryDirectory(prefix="fit-unlearn-datasets-") as cache:
        try:
            if src.fmt == "disk":
                ds = datasets.load_from_disk(str(src.paths[0]))
            else:
                files = [str(p) for p in src.paths]
                ds = datasets.load_dataset(
                    src.fmt, data_files=files, split="train", cache_dir=cache, keep_in_memory=True
                )
        except Exception as e:  # noqa: BLE001 - datasets and pyarrow raise many types; the user gets one line
            cause = e.__cause__ or e
            msg = " ".join(str(cause).split())[:300] or type(cause).__name__
            what = "save_to_disk output" if src.fmt == "disk" else f"{src.fmt} rows"
            raise DataError(
                f"{src.where}: not readable as {what} ({type(cause).__name__}: {msg}); give a save_to_disk "
                'directory, parquet files, or JSON lines of {"question": ..., "answer": ...} rows'
            ) from None
        if isinstance(ds, datasets.DatasetDict):
            if src.key is not None:
                ds = ds[src.key]
            elif len(ds) == 1:
                ds = next(iter(ds.values()))
            else:
                raise DataError(
                    f"{src.where}: a DatasetDict with splits {', '.join(ds)}; give the directory above it with "
                    "the split names (--forget-split ...), or save one split per folder"
                )
        return list(ds.column_names), ds.to_list()


# ---- rows -> documents ------------------------------------------------------------------------------------
def _text(value: object, column: str, where: str, row: int) -> str:
    if not isinstance(value, str) or not value.strip():
        got = "missing" if value is None else ("empty" if isinstance(value, str) else f"a {type(value).__name__}")
        raise DataError(
            f"{where}: row {row}: {column!r} is {got}; every row needs a non-empty string question and answer"
        )
    return value


def _groups(rows: list[dict], cfg: QADatasetConfig, where: str) -> list[tuple[str, list[int]]]:
    """(key, row indices) of each deletion request, in order (see the module's docstring, step 3)."""
    if cfg.group_by is not None:
        groups: dict[str, list[int]] = {}
        for i, row in enumerate(rows):
            value = row.get(cfg.group_by)
            key = "" if value is None else str(value).strip()
            if not key:
                raise DataError(
                    f"{where}: row {i} has no {cfg.group_by!r} value; every row needs its subject there, or group "
                    "consecutive rows with --group-size N instead of --group-by"
                )
            groups.setdefault(key, []).append(i)
        return list(groups.items())
    n, size = len(rows), cfg.group_size
    if n % size:
        raise DataError(
            f"{where}: {n} rows do not divide into requests of {size} rows (the last would have {n % size}); "
            "give the column naming each row's subject with --group-by COLUMN, or the rows per subject with "
            "--group-size N"
        )
    return [(f"{k:04d}", list(range(k * size, (k + 1) * size))) for k in range(n // size)]


def qa_documents(
    columns: list[str],
    rows: list[dict],
    split: str,
    cfg: QADatasetConfig,
    where: str,
    max_chars: int = DEFAULT_MAX_DOC_CHARS,
) -> list[Document]:
    """The documents of one split's rows, one per subject (the module's docstring, steps 3 and 4); ids
    ``<split>-<key>``."""
    for col in (QUESTION, ANSWER):
        if col not in columns:
            raise DataError(
                f"{where}: no {col!r} column (columns: {', '.join(columns) or 'none'}); a TOFU-layout data set "
                "has one pair per row in 'question' and 'answer': rename yours (Dataset.rename_column)"
            )
    if cfg.group_by is not None and cfg.group_by not in columns:
        raise DataError(
            f"{where}: no column {cfg.group_by!r} to group by (columns: {', '.join(columns)}); give one of them "
            "with --group-by, or group consecutive rows with --group-size N"
        )
    if not rows:
        raise DataError(f"{where}: the split has no rows; it must hold at least one question / answer pair")
    docs = []
    for key, idx in _groups(rows, cfg, where):
        qa, paraphrases = [], []
        for i in idx:
            row = rows[i]
            pair = QA(_text(row[QUESTION], QUESTION, where, i), _text(row[ANSWER], ANSWER, where, i))
            qa.append(pair)
            other = row.get(PARAPHRASED_QUESTION)
            if isinstance(other, str) and other.strip():
                paraphrases.append(QA(other, pair.answer))
            elif other is not None and not isinstance(other, str):
                raise DataError(
                    f"{where}: row {i}: {PARAPHRASED_QUESTION!r} must be a string, got {type(other).__name__}"
                )
        text = "\n\n".join(f"{qa_prompt(q)} {q.answer}" for q in qa)
        doc = Document(f"{split}-{key}", text, DOMAIN, tuple(qa), tuple(paraphrases))
        docs.append(validate_document(doc, where, max_chars))
    return docs


def load_qa_split(
    path: str | os.PathLike,
    split: str,
    cfg: QADatasetConfig | None = None,
    *,
    max_chars: int = DEFAULT_MAX_DOC_CHARS,
) -> list[Document]:
    """The documents of one split given as a path (:func:`is_qa_split`): a parquet or JSON(L) file, a
    ``save_to_disk`` directory or a folder of such files; ids ``<split>-<key>``."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: not found")
    if path.is_dir():
        if _is_saved(path):
            src = _Source("disk", (path,))
        elif (found := _files_in(path)) is not None:
            src = _Source(*found)
        else:
            raise DataError(f"{path}: neither save_to_disk output nor a folder of parquet / JSON files")
    elif path.suffix in FORMATS:
        src = _Source(FORMATS[path.suffix], (path,))
    else:
        raise DataError(f"{path}: expected a .parquet, .json or .jsonl file or a save_to_disk directory")
    columns, rows = _read_rows(src)
    return qa_documents(columns, rows, split, cfg or QADatasetConfig(), src.where, max_chars)


def load_qa_dataset(
    path: str | os.PathLike,
    cfg: QADatasetConfig | None = None,
    *,
    max_chars: int = DEFAULT_MAX_DOC_CHARS,
) -> DataSplits:
    """The forget / retain (/ holdout) documents of a QA data set's directory; ids ``<split name>-<key>``."""
    root = Path(path)
    cfg = cfg or QADatasetConfig()
    if not root.is_dir():
        raise DataError(f"{root}: data set directory not found")
    named = {"forget": cfg.forget, "retain": cfg.retain, "holdout": cfg.holdout}
    if cfg.forget == cfg.retain:
        raise DataError(f"{root}: forget and retain are the same split {cfg.forget!r}; give --retain-split another")
    found: dict[str, list[Document]] = {}
    for role in named:
        docs = _role_documents(root, role, cfg, max_chars)
        if docs is not None:
            found[role] = docs
    check_unique_across(found, root)
    check_disjoint(found, root)
    shown = ", ".join(f"{role} {named[role]}: {len(docs)} documents" for role, docs in found.items())
    log.info("%s: %s (grouped %s)", root, shown, cfg.grouping())
    return DataSplits(found["forget"], found["retain"], found.get("holdout", []), source=str(root))


def load_qa_requests(
    path: str | os.PathLike, cfg: QADatasetConfig | None = None, *, max_chars: int = DEFAULT_MAX_DOC_CHARS
) -> list[Document] | None:
    """The deletion requests of a request source that is a Hugging Face QA data set: the forget split of a data
    set's directory (ids ``<split name>-<key>``, as :func:`load_qa_dataset` gives them) or the one split a path
    holds (ids ``forget-<key>``, as ``--forget PATH`` gives them); None for any other source."""
    cfg = cfg or QADatasetConfig()
    if is_qa_dataset(path, cfg):
        return _role_documents(Path(path), "forget", cfg, max_chars)
    if is_qa_split(path):
        return load_qa_split(path, "forget", cfg, max_chars=max_chars)
    return None


def _role_documents(root: Path, role: str, cfg: QADatasetConfig, max_chars: int) -> list[Document] | None:
    """The documents of the split ``cfg`` names for ``role`` (forget, retain, holdout); None for a holdout
    that is not there and was not asked for."""
    name = getattr(cfg, role)
    if name is None:
        return None
    src = _find_split(root, name)
    if src is None:
        if role == "holdout" and "holdout" not in cfg.model_fields_set:
            return None  # the default holdout is optional, as in a data directory
        offered = ", ".join(_split_names(root)) or "none"
        in_run = " (stream.dataset.forget in a run configuration)" if role == "forget" else ""
        raise DataError(
            f"{root}: no {role} split {name!r} (splits found: {offered}); name it with --{role}-split{in_run}"
        )
    columns, rows = _read_rows(src)
    return qa_documents(columns, rows, name, cfg, src.where, max_chars)


def check_disjoint(found: dict[str, list[Document]], where) -> None:
    """A forget subject must not be in the retain or holdout split (``full`` as retain holds every forget
    split): refused when every pair of a forget document is also a pair there; a few shared pairs are only
    logged (two subjects may share a generic question).  Data-set documents (domain ``qa``) only."""
    forget = [d for d in found.get("forget", []) if d.domain == DOMAIN]
    for role in ("retain", "holdout"):
        other = {q for d in found.get(role, []) if d.domain == DOMAIN for q in d.qa}
        if not forget or not other:
            continue
        inside = [d for d in forget if set(d.qa) <= other]
        if inside:
            raise DataError(
                f"{where}: {len(inside)} forget subject(s) are also in the {role} split, e.g. {inside[0].id!r} (all "
                f"{len(inside[0].qa)} of its pairs); the {role} split must leave the forget subjects out (TOFU: "
                "retain90 with forget10, retain95 with forget05, retain99 with forget01)"
            )
        shared = sum(q in other for d in forget for q in d.qa)
        if shared:
            log.warning("%s: %d forget question / answer pair(s) are also in the %s split", where, shared, role)


__all__ = [
    "QADatasetConfig",
    "is_qa_dataset",
    "is_qa_split",
    "is_saved_dataset",
    "load_qa_dataset",
    "load_qa_requests",
    "load_qa_split",
    "qa_documents",
]
