"""Atomic checkpoints: weights + everything needed to continue exactly (stream position, RNG states,
strategy state such as FIT's filter memory), written to a temporary directory and renamed into place."""

from __future__ import annotations

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


def save_checkpoint(run: RunDir, position: int, model, tok, strategy, state: dict, keep: int = 2) -> Path:
    """Write the run's checkpoint at ``position`` atomically; keep the newest ``keep`` checkpoints."""
    root = run.checkpoints
    root.mkdir(parents=True, exist_ok=True)
    final = run.checkpoint(position).root
    tmp_root = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=root))
    tmp = CheckpointDir(tmp_root)
    try:
        unwrap(model).save_pretrained(str(tmp.model), safe_serialization=True)
        tok.save_pretrained(str(tmp.model))
        tmp.strategy.mkdir()
        strategy.save_state(tmp.strategy)
        torch.save(rng_state(), tmp.rng)
        tmp.state.write_text(json.dumps({**state, "position": position}, indent=2))
        _fsync_dir(tmp_root)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp_root, final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp_root, ignore_errors=True)
        raise
    for old in sorted(p for p in root.glob(CheckpointDir.GLOB) if p.is_dir())[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(CheckpointDir.TEMP_GLOB):  # temp dirs of a crash
        shutil.rmtree(stale, ignore_errors=True)
    return final


def load_checkpoint_state(path: Path) -> dict:
    ck = CheckpointDir(path)
    state = json.loads(ck.state.read_text())
    rng = torch.load(ck.rng, weights_only=False)
    return {**state, "rng": rng}


def is_valid(path: Path) -> bool:
    ck = CheckpointDir(path)
    return ck.state.exists() and (ck.model / "config.json").exists()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass
