"""Shared by the commands: typer option aliases, default paths, the output console and data loading."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from fit_unlearn.data.documents import DataSplits
from fit_unlearn.data.hf import QADatasetConfig
from fit_unlearn.data.sources import load_documents
from fit_unlearn.errors import ConfigError, FitUnlearnError
from fit_unlearn.prepare import PrepareConfig

#: results and tables go to stdout; errors (``fit_unlearn.cli.main``) and progress bars to stderr
out_console = Console()

DEFAULT_DATA = Path("fit_data/synth")
DEFAULT_PREPARED = Path("fit_runs/prepared")
DEFAULT_RUN = Path("fit_runs/run")
PREP = PrepareConfig()  #: the library's prepare defaults, shown and used by `prepare`

DataOpt = Annotated[
    Path | None,
    typer.Option(
        "--data",
        help="data directory: forget/retain(/holdout) .jsonl or PCH .json, or a Hugging Face QA data set "
        "(TOFU layout: save_to_disk output or parquet/JSON files)",
    ),
]
ForgetOpt = Annotated[
    Path | None,
    typer.Option("--forget", help="forget split file (.jsonl, PCH .json, or QA rows: .parquet/.json/save_to_disk)"),
]
RetainOpt = Annotated[Path | None, typer.Option("--retain", help="retain split file (same forms as --forget)")]
HoldoutOpt = Annotated[Path | None, typer.Option("--holdout", help="holdout split file (never trained on; for MIA)")]
_QA = QADatasetConfig()
ForgetSplitOpt = Annotated[
    str | None,
    typer.Option("--forget-split", help=f"QA data set: split of the deletion requests [default: {_QA.forget}]"),
]
RetainSplitOpt = Annotated[
    str | None, typer.Option("--retain-split", help=f"QA data set: split the model keeps [default: {_QA.retain}]")
]
HoldoutSplitOpt = Annotated[
    str | None,
    typer.Option("--holdout-split", help=f"QA data set: split never trained on [default: {_QA.holdout}, if present]"),
]
GroupByOpt = Annotated[
    str | None,
    typer.Option("--group-by", help="QA data set: column naming each row's subject; one deletion request per value"),
]
GroupSizeOpt = Annotated[
    int | None,
    typer.Option(
        "--group-size",
        min=1,
        help=f"QA data set: rows per deletion request without --group-by [default: {_QA.group_size}]",
    ),
]
DeviceOpt = Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:N or auto")]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="fp32 or bf16 (bf16 for GPUs)")]
MaxCharsOpt = Annotated[int, typer.Option("--max-doc-chars", help="refuse documents longer than this")]
RunOpt = Annotated[Path, typer.Option(help="run directory of `fit-unlearn run` (its final model and forgotten docs)")]


def qa_config(
    forget_split: str | None = None,
    retain_split: str | None = None,
    holdout_split: str | None = None,
    group_by: str | None = None,
    group_size: int | None = None,
) -> QADatasetConfig | None:
    """The QA data set options given on the command line, or None when none was (the data is then recognised
    by its form, with TOFU's defaults)."""
    given = {
        "forget": forget_split,
        "retain": retain_split,
        "holdout": holdout_split,
        "group_by": group_by,
        "group_size": group_size,
    }
    given = {k: v for k, v in given.items() if v is not None}
    if not given:
        return None
    if group_by is not None and group_size is not None:
        raise ConfigError(
            "give --group-by COLUMN (one request per value) or --group-size N (blocks of N rows), not both"
        )
    return QADatasetConfig(**given)


def load_data(
    data: Path | None,
    forget: Path | None,
    retain: Path | None,
    holdout: Path | None,
    max_chars: int,
    qa: QADatasetConfig | None = None,
) -> DataSplits:
    """The splits of --data or of --forget/--retain(/--holdout); without either, the `data synth` default.
    ``qa``: how a Hugging Face QA data set is read (:func:`qa_config`)."""
    if data is None and forget is None and retain is None:
        data = DEFAULT_DATA
        if not data.exists():
            raise FitUnlearnError(
                f"no data given and {data} does not exist: run `fit-unlearn data synth` "
                "or pass --data DIR / --forget F --retain R"
            )
    return load_documents(data, forget=forget, retain=retain, holdout=holdout, max_chars=max_chars, qa=qa)


def write_results(res: dict, out: Path) -> Path:
    """Write an evaluation's results as indented JSON to ``out`` (its folder created); returns ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")  # atomic: a kill leaves the old file or the new one, never half
    tmp.write_text(json.dumps(res, indent=2))
    os.replace(tmp, out)
    return out
