"""The retain split divided into **retain-train** and **retain-eval**, recorded in the prepared directory.

Both parts are in the training data of theta_0 and of the retain-only model.  Every retain anchor of an
unlearning step (GradDiff's CE, the KL terms, FIT's retain profile, any repair step) draws from
retain-train only; utility R is scored on retain-eval only.  Otherwise R.U. would measure how well the
anchor was rehearsed, not the model's utility.

The default division is seeded and stratified by domain (every domain appears on both sides where it has
two documents or more); a user can give the retain-eval ids explicitly instead.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from fit_unlearn.data.documents import Document
from fit_unlearn.errors import DataError

DEFAULT_EVAL_FRACTION = 0.5


@dataclass(frozen=True)
class RetainSplit:
    train_ids: tuple[str, ...]
    eval_ids: tuple[str, ...]
    #: how the split was made: "seeded" (seed, eval_fraction) or "ids" (given by the user)
    method: str = "seeded"
    seed: int | None = 0
    eval_fraction: float | None = DEFAULT_EVAL_FRACTION

    def to_json(self) -> dict:
        return {**asdict(self), "train_ids": list(self.train_ids), "eval_ids": list(self.eval_ids)}

    @classmethod
    def from_json(cls, d: dict) -> RetainSplit:
        return cls(
            train_ids=tuple(d["train_ids"]),
            eval_ids=tuple(d["eval_ids"]),
            method=d.get("method", "seeded"),
            seed=d.get("seed"),
            eval_fraction=d.get("eval_fraction"),
        )

    def digest(self) -> str:
        blob = json.dumps([sorted(self.train_ids), sorted(self.eval_ids)])
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def split_retain(
    retain: Sequence[Document], eval_fraction: float = DEFAULT_EVAL_FRACTION, seed: int = 0
) -> RetainSplit:
    """A seeded, domain-stratified division of ``retain``: round(eval_fraction * n) documents to retain-eval."""
    if not 0 < eval_fraction < 1:
        raise DataError(f"--retain-eval-fraction must be in (0, 1), got {eval_fraction}")
    if len(retain) < 2:
        raise DataError(
            f"the retain split has {len(retain)} document(s); at least 2 are needed (one to anchor training, "
            "one to measure utility)"
        )
    rng = random.Random(f"{seed}-retain-split")
    keyed = sorted((d.domain or "other", rng.random(), d.id) for d in retain)
    n_eval = min(len(retain) - 1, max(1, round(eval_fraction * len(retain))))
    # spread the eval picks evenly over the domain-sorted list: every domain gets its share
    picks = {int((i + 0.5) * len(keyed) / n_eval) for i in range(n_eval)}
    eval_ids = {keyed[i][2] for i in picks}
    order = [d.id for d in retain]
    return RetainSplit(
        train_ids=tuple(i for i in order if i not in eval_ids),
        eval_ids=tuple(i for i in order if i in eval_ids),
        method="seeded",
        seed=seed,
        eval_fraction=eval_fraction,
    )


def split_from_ids(retain: Sequence[Document], eval_ids: Sequence[str], where: str = "retain-eval ids") -> RetainSplit:
    """The split a user gives: these retain ids are retain-eval, the others retain-train."""
    known = [d.id for d in retain]
    known_set = set(known)
    wanted = [i.strip() for i in eval_ids if i.strip()]
    unknown = [i for i in wanted if i not in known_set]
    if unknown:
        raise DataError(f"{where}: {unknown[:3]} are not ids of the retain split; list retain document ids only")
    chosen = set(wanted)
    if not chosen or len(chosen) == len(known):
        raise DataError(
            f"{where}: {len(chosen)} of {len(known)} retain documents chosen for retain-eval; both retain-eval "
            "and retain-train need at least one document"
        )
    return RetainSplit(
        train_ids=tuple(i for i in known if i not in chosen),
        eval_ids=tuple(i for i in known if i in chosen),
        method="ids",
        seed=None,
        eval_fraction=None,
    )


def read_ids(path) -> list[str]:
    """Ids from a file: a JSON list of strings, or one id per line."""

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found; give a file of retain-eval ids (one per line or a JSON list)")
    text = path.read_text(encoding="utf-8-sig")
    if text.lstrip().startswith("["):
        try:
            ids = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: not valid JSON ({e.msg}); give a JSON list of ids or one id per line") from None
        if not isinstance(ids, list) or not all(isinstance(i, str | int) and not isinstance(i, bool) for i in ids):
            raise DataError(f"{path}: expected a JSON list of ids")
        return [str(i) for i in ids]
    return [line.strip() for line in text.splitlines() if line.strip()]
