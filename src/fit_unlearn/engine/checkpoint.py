"""Atomic checkpoints: weights + everything needed to continue exactly (stream position, RNG states,
strategy state such as FIT's filter memory), written to a temporary directory and renamed into place.

Every file is fsync'd before the rename, and :func:`save_checkpoint` returns a content digest (sha256 over
each file's path and bytes) that the engine journals with the checkpoint; :func:`verify` recomputes it
before a resume trusts the directory.  Old checkpoints are deleted by :func:`prune`, which the engine calls
only after the new checkpoint is journaled, and which never deletes the one the journal points to.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from fit_unlearn.layers import unwrap
from fit_unlearn.layout import CheckpointDir, RunDir


def rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def save_checkpoint(
    run: RunDir, position: int, model, tok, strategy, state: dict, state_dict: dict | None = None, adapters=None
) -> tuple[Path, str]:
    """Write the run's checkpoint at ``position`` atomically and durably; returns (directory, digest).
    ``state_dict``: the model's full weights when the model itself holds only a shard of them (gathered by
    every rank beforehand, see engine/distributed.py).  Stacked LoRA ``adapters``: ``model/`` gets the merged
    weights (a plain model) and ``adapters/`` the adapters themselves.  Nothing older is deleted here: see
    :func:`prune`."""
    root = run.checkpoints
    root.mkdir(parents=True, exist_ok=True)
    final = run.checkpoint(position).root
    tmp_root = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=root))
    tmp = CheckpointDir(tmp_root)
    try:
        if adapters is not None and adapters.stacked:
            state_dict = adapters.merged_state_dict()
            adapters.save(tmp.adapters)
        unwrap(model).save_pretrained(str(tmp.model), safe_serialization=True, state_dict=state_dict)
        tok.save_pretrained(str(tmp.model))
        tmp.strategy.mkdir()
        strategy.save_state(tmp.strategy)
        torch.save(rng_state(), tmp.rng)
        tmp.state.write_text(json.dumps({**state, "position": position}, indent=2))
        for f in _files(tmp_root):
            _fsync_file(f)
        for d in sorted({f.parent for f in _files(tmp_root)} | {tmp_root}, key=lambda x: -len(x.parts)):
            _fsync_dir(d)
        digest = content_digest(tmp_root)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp_root, final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp_root, ignore_errors=True)
        raise
    return final, digest


def prune(run: RunDir, keep: int, protect: Path) -> None:
    """Delete all but the newest ``keep`` checkpoints, never ``protect`` (the journal's last one), and the
    temporary directories a crash left behind.  Call it after the newest checkpoint is journaled."""
    root = run.checkpoints
    protect = Path(protect).resolve()
    for old in sorted(p for p in root.glob(CheckpointDir.GLOB) if p.is_dir())[:-keep]:
        if old.resolve() != protect:
            shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(CheckpointDir.TEMP_GLOB):
        shutil.rmtree(stale, ignore_errors=True)


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def content_digest(root: Path) -> str:
    """sha256 over every file's relative path and bytes, in path order."""
    h = hashlib.sha256()
    for f in _files(root):
        h.update(str(f.relative_to(root)).encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        h.update(b"\0")
    return h.hexdigest()


def load_checkpoint_state(path: Path) -> dict:
    ck = CheckpointDir(path)
    state = json.loads(ck.state.read_text())
    rng = torch.load(ck.rng, weights_only=False)
    return {**state, "rng": rng}


def verify(path: Path, digest: str | None) -> str | None:
    """None when the checkpoint is complete and, if ``digest`` is given, has exactly that content; else the
    reason it cannot be trusted.  (Checkpoints journaled before digests existed are checked for files only.)"""
    ck = CheckpointDir(path)
    if not (ck.state.exists() and (ck.model / "config.json").exists()):
        return "missing or incomplete"
    if digest is not None and content_digest(Path(path)) != digest:
        return "corrupt: its content differs from the digest journaled with it (truncated or modified)"
    return None


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass
