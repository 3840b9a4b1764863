"""Shared by the attacks: recovery ratio and the run's forgotten documents."""

from __future__ import annotations

import json
from pathlib import Path

from fit_unlearn.data.documents import Document, load_pch_dir
from fit_unlearn.errors import ConfigError
from fit_unlearn.layout import CheckpointDir, PreparedDir, RunDir


def recovery(f_attacked: float, f_unlearned: float, f_theta0: float) -> float | None:
    """(F_q - F_unl) / (F_0 - F_unl): 0 = nothing recovered, 1 = back to theta_0."""
    gap = f_theta0 - f_unlearned
    if abs(gap) < 1e-9:
        return None
    return (f_attacked - f_unlearned) / gap


def run_model_and_forgotten(run: Path) -> tuple[Path, list[Document], Path]:
    """(final model dir, documents forgotten by the run, prepared dir) of a run directory."""
    res_path = RunDir.of(run).results
    if not res_path.exists():
        raise ConfigError(f"{res_path}: not found; pass --run with the --out of a finished `fit-unlearn run`")
    res = json.loads(res_path.read_text())
    if not res.get("final_model"):
        raise ConfigError(f"{run}: the run has no checkpoint yet")
    model = Path(res["final_model"])
    state = json.loads(CheckpointDir.of_model(model).state.read_text())
    prepared = Path(res["config"]["prepared"])
    known = _prepared_forget(prepared)
    docs = [known.get(d["id"]) or Document.from_json(d) for d in state["forgotten"]]  # prepared: with paraphrases
    return model, docs, prepared


def run_edits_rows(run: Path) -> bool:
    """Whether a finished run's updates were token-keyed edits (its journaled ``update.trainable: rows``)."""
    res = json.loads(RunDir.of(run).results.read_text())
    return (res.get("config") or {}).get("update", {}).get("trainable") == "rows"


def _prepared_forget(prepared: Path) -> dict[str, Document]:

    try:
        return {d.id: d for d in load_pch_dir(PreparedDir(prepared).data).forget}
    except Exception:  # noqa: BLE001 - the run's own copies are enough
        return {}
