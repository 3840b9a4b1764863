"""Inspect and revert single requests of a run with stacked LoRA adapters (``update.lora.mode: stack``).

Every request's update is its own adapter over the untouched theta_0 weights, so "the model without request
X" is theta_0 plus every other adapter: exactly what the stream would have produced had X's update been
skipped, *if* the later updates did not depend on it (they were trained on a model that held X's adapter;
the revert does not retrain them, it removes X's contribution).  The run itself is never modified: a revert
writes a new plain model directory.
"""

from __future__ import annotations

from pathlib import Path

from safetensors import safe_open

from fit_unlearn.engine.adapters import Adapters, read_index
from fit_unlearn.engine.config import RunConfig
from fit_unlearn.engine.journal import Journal
from fit_unlearn.errors import ConfigError
from fit_unlearn.layout import CheckpointDir, RunDir
from fit_unlearn.models import load_model, save_model


def _run_state(run: str | Path) -> tuple[Journal, RunConfig, Path]:
    rd = RunDir(run)
    if not rd.journal.exists():
        raise ConfigError(f"{run}: not a run directory (no journal.jsonl)")
    journal = Journal(rd.journal, writer=False)
    if journal.start is None:
        raise ConfigError(f"{rd.journal}: the journal has no start record")
    cfg = RunConfig.from_journal(journal.start["config"])
    if cfg.update.trainable != "lora" or cfg.update.lora.mode != "stack":
        raise ConfigError(
            f"{run}: the run did not keep one adapter per request (it needs update.trainable: lora and "
            "update.lora.mode: stack); its requests cannot be reverted one by one"
        )
    ck = journal.last_checkpoint()
    if ck is None:
        raise ConfigError(f"{run}: no checkpoint yet; nothing to inspect")
    return journal, cfg, CheckpointDir(ck["path"]).adapters


def adapters_table(run: str | Path) -> list[dict]:
    """One row per adapter of the run's last checkpoint: request id, stream position, layers, parameters,
    bytes on disk, and the objective and steps the receipt records."""
    journal, _, folder = _run_state(run)
    applied = {e["record"].get("adapter"): e for e in journal.events if e["event"] == "applied"}
    rows = []
    for a in read_index(folder):
        files = list((folder / a["name"]).glob("*.safetensors"))
        params = 0
        for f in files:
            with safe_open(str(f), "pt") as fh:
                params += sum(_numel(fh, k) for k in fh.keys())
        e = applied.get(a["name"], {})
        rec = e.get("record", {})
        rows.append(
            {
                "adapter": a["name"],
                "request": e.get("id"),
                "position": e.get("position"),
                "layers": a["layers"],
                "params": params,
                "bytes": sum(f.stat().st_size for f in files),
                "objective": rec.get("objective"),
                "steps": rec.get("steps"),
            }
        )
    return rows


def _numel(fh, key: str) -> int:
    n = 1
    for d in fh.get_slice(key).get_shape():
        n *= d
    return n


def revert(run: str | Path, request_ids: list[str], out: str | Path, device: str = "cpu") -> dict:
    """Write to ``out`` the run's final model without the adapters of ``request_ids``: theta_0 (the model the
    run started from) plus every other adapter, merged into a plain Hugging Face model directory."""
    journal, cfg, folder = _run_state(run)
    rows = adapters_table(run)
    by_request = {r["request"]: r["adapter"] for r in rows}
    missing = [r for r in request_ids if r not in by_request]
    if missing:
        known = ", ".join(str(r["request"]) for r in rows[:8])
        raise ConfigError(
            f"request(s) {missing} have no adapter in {folder} (not applied, rolled back, or redundant); "
            f"applied: {known}{', ...' if len(rows) > 8 else ''}"
        )
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out}: exists and is not empty; choose a new --out")
    base_path = journal.start["provenance"]["model"]
    model, tok = load_model(base_path, device=device, dtype=cfg.dtype)
    ad = Adapters(model, cfg.update.lora)
    ad.load(folder)
    drop = {by_request[r] for r in request_ids}
    ad.names = [n for n in ad.names if n not in drop]  # merged_state_dict merges the kept adapters only
    info = {
        "run": str(run),
        "base_model": str(base_path),
        "reverted": [{"request": r, "adapter": by_request[r]} for r in request_ids],
        "kept": ad.names,
    }
    # the model holds the adapters (LoRA layers); the kept ones merged under the plain names make a plain model
    save_model(model, tok, out, extra={"reverted.json": info}, state_dict=ad.merged_state_dict())
    return {**info, "out": str(out)}


__all__ = ["adapters_table", "revert"]
