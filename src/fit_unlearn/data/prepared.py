"""The data of a prepared directory (``fit-unlearn prepare``): its documents and its recorded
retain-train / retain-eval split, validated (disjoint, complete, both parts non-empty)."""

from __future__ import annotations

import json
from pathlib import Path

from fit_unlearn.data.documents import DataSplits, load_pch_dir
from fit_unlearn.data.splits import RetainSplit
from fit_unlearn.errors import DataError
from fit_unlearn.layout import PreparedDir


def prepared_data(out: str | Path | PreparedDir) -> DataSplits:
    """The documents of a prepared directory, with its recorded retain-train / retain-eval split."""
    out = PreparedDir.of(out)
    data = load_pch_dir(out.data)
    split = load_split(out)
    check_split(split, data, out.split)
    return data.with_retain_eval(split.eval_ids)


def load_split(out: str | Path | PreparedDir) -> RetainSplit:
    path = PreparedDir.of(out).split
    if not path.exists():
        raise DataError(
            f"{path}: no retain-train / retain-eval split recorded (prepared by an older fit-unlearn); run "
            "`fit-unlearn prepare` with the same arguments again: it records the split without retraining"
        )
    try:
        return RetainSplit.from_json(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(
            f"{path}: not a valid split file ({type(e).__name__}: {e}); it needs 'train_ids' and 'eval_ids' lists, "
            "or run `fit-unlearn prepare` again (with --retain-eval-ids FILE for your own split)"
        ) from None


def check_split(split: RetainSplit, data: DataSplits, where) -> None:
    """The split must divide exactly the retain split: disjoint, complete, both parts non-empty."""
    retain = {d.id for d in data.retain}
    train, ev = set(split.train_ids), set(split.eval_ids)
    problems = []
    if train & ev:
        problems.append(f"{len(train & ev)} id(s) in both parts, e.g. {sorted(train & ev)[0]!r}")
    if (train | ev) - retain:
        problems.append(f"unknown id(s) such as {sorted((train | ev) - retain)[0]!r}")
    if retain - (train | ev):
        problems.append(f"{len(retain - (train | ev))} retain document(s) in neither part")
    if not train or not ev:
        problems.append("an empty part")
    if problems:
        raise DataError(
            f"{where}: the retain split does not divide the retain documents ({'; '.join(problems)}); run "
            "`fit-unlearn prepare` again (with --retain-eval-ids FILE for your own split)"
        )
