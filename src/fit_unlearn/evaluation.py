"""Evaluate a model against a prepared directory: forget / retain scores, F.D. / R.U., MIA, extraction.

The reference values F_0, F_T (theta_0, retain-only) are computed on the *same documents* as the
model under test: ``reference.json`` keeps per-document values of both gold models, so the composite
of any subset (the documents forgotten so far at step t) is exact without re-running them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from fit_unlearn.data.documents import DataSplits, Document
from fit_unlearn.errors import ConfigError
from fit_unlearn.metrics.privacy import mean_extraction_strength, mia_auc
from fit_unlearn.metrics.reference import ReferencePoints, forget_degree, retain_utility
from fit_unlearn.metrics.scores import composite, doc_token_stats, evaluate_split


def scores_from_items(items: Sequence[dict]) -> dict:
    """p, r, a, composite of a set of per-document items (as written by ``evaluate_split``)."""
    qa = [q for it in items for q in it["qa"]]
    p = sum(q["probability"] for q in qa) / len(qa) if qa else 0.0
    r = sum(q["rouge_l"] for q in qa) / len(qa) if qa else 0.0
    a = sum(it["token_acc"] for it in items) / len(items) if items else 0.0
    return {"probability": p, "rouge_l": r, "token_acc": a, "score": composite(p, r, a), "n_docs": len(items)}


class Reference:
    """Per-document scores of theta_0 and the retain-only model (``reference.json``)."""

    def __init__(self, data: dict):
        self.data = data
        self._index = {
            m: {s: {it["id"]: it for it in data[m][s]} for s in ("forget", "retain")} for m in ("theta0", "retain_only")
        }

    @classmethod
    def load(cls, prepared: str | Path) -> Reference:
        path = Path(prepared) / "reference.json"
        if not path.exists():
            raise ConfigError(f"{path}: not found; run `fit-unlearn prepare` first (or point --prepared at its output)")
        return cls(json.loads(path.read_text()))

    def _subset(self, model: str, split: str, ids: Sequence[str]) -> dict:
        idx = self._index[model][split]
        missing = [i for i in ids if i not in idx]
        if missing:
            raise ConfigError(
                f"documents {missing[:3]} are not in the prepared {split} split; "
                "evaluate with the data of the prepared directory"
            )
        return scores_from_items([idx[i] for i in ids])

    def knows_forget(self, ids: Sequence[str]) -> bool:
        return all(i in self._index["theta0"]["forget"] for i in ids)

    def points(self, forget_ids: Sequence[str], retain_ids: Sequence[str]) -> ReferencePoints:
        return ReferencePoints(
            forget_0=self._subset("theta0", "forget", forget_ids)["score"],
            retain_0=self._subset("theta0", "retain", retain_ids)["score"],
            forget_T=self._subset("retain_only", "forget", forget_ids)["score"],
            retain_T=self._subset("retain_only", "retain", retain_ids)["score"],
        )

    @property
    def holdout_stats(self) -> list[dict]:
        return self.data.get("holdout_stats", [])


def build_reference(
    prepared: Path,
    data: DataSplits,
    *,
    device: str = "cpu",
    dtype: str = "fp32",
    batch_size: int = 16,
    progress: bool = True,
) -> dict:
    """Score theta_0 and the retain-only model on every forget / retain document; write reference.json."""
    from fit_unlearn.models import load_model

    path = prepared / "reference.json"
    key = data.hash()
    if path.exists():
        ref = json.loads(path.read_text())
        if ref.get("data_hash") == key and ref.get("models_hash") == _models_hash(prepared):
            return ref
    ref: dict = {"data_hash": key, "models_hash": _models_hash(prepared)}
    for name in ("theta0", "retain_only"):
        model, tok = load_model(prepared / name, device=device, dtype=dtype)
        ref[name] = {
            s: evaluate_split(model, tok, docs, batch_size=batch_size, progress=progress).items
            for s, docs in (("forget", data.forget), ("retain", data.retain))
        }
        if name == "theta0" and data.holdout:
            ref["holdout_stats_theta0"] = [_slim(s) for s in doc_token_stats(model, tok, data.holdout)]
        del model
    r = Reference(ref)
    ref["points"] = r.points([d.id for d in data.forget], [d.id for d in data.retain]).to_json()
    path.write_text(json.dumps(ref))
    return ref


def _models_hash(prepared: Path) -> str:
    from fit_unlearn.models import model_hash

    return "-".join(model_hash(prepared / n) for n in ("theta0", "retain_only"))


def _slim(stat: dict) -> dict:
    return {k: stat[k] for k in ("id", "token_acc", "token_logprobs", "extraction_strength")}


def evaluate_model(
    model,
    tok,
    *,
    forget: Sequence[Document],
    retain: Sequence[Document],
    holdout: Sequence[Document] = (),
    reference: Reference | None = None,
    t: int | None = None,
    T: int | None = None,
    batch_size: int = 16,
    progress: bool = False,
) -> dict:
    """Scores of ``model`` on the forgotten-so-far documents and the retain split.

    With a ``reference``: F.D. and R.U. at step ``t`` of a stream of length ``T`` (defaults: t = T =
    len(forget)), against F_ref(t) = F_0 + (F_T - F_0) t / T on the same documents."""
    forget_stats = doc_token_stats(model, tok, forget, batch_size=max(1, batch_size // 2))
    f = evaluate_split(model, tok, forget, batch_size=batch_size, progress=progress, token_stats=forget_stats)
    r = evaluate_split(model, tok, retain, batch_size=batch_size, progress=progress)
    result: dict = {"forget": f.summary(), "retain": r.summary()}
    if forget:
        result["extraction_strength_forget"] = mean_extraction_strength(forget_stats)
    if holdout and forget:
        hold_stats = doc_token_stats(model, tok, holdout, batch_size=max(1, batch_size // 2))
        result["mia_auc_forget_vs_holdout"] = mia_auc(forget_stats, hold_stats)
        result["extraction_strength_holdout"] = mean_extraction_strength(hold_stats)
    if reference is not None and forget:
        T = T if T is not None else len(forget)
        t = t if t is not None else T
        forget_ids = [d.id for d in forget]
        if reference.knows_forget(forget_ids):
            pts = reference.points(forget_ids, [d.id for d in retain])
            result["forget_degree"] = forget_degree(f.score, pts, t, T)
        else:  # requests that are not prepared forget documents (e.g. a malicious stream): R.U. only
            pts = reference.points(list(reference._index["theta0"]["forget"]), [d.id for d in retain])
            pts = ReferencePoints(float("nan"), pts.retain_0, float("nan"), pts.retain_T)
            result["forget_degree"] = None
        result.update(
            {"t": t, "T": T, "reference": pts.to_json(), "retain_utility": retain_utility(r.score, pts, t, T)}
        )
    result["items"] = {"forget": f.items, "retain": r.items}
    return result
