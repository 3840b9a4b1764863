"""Run by test_distributed via torchrun: one engine per rank over gloo (CPU)."""

import hashlib
import sys
from pathlib import Path

import torch
from accelerate import Accelerator

from fit_unlearn.engine import Engine
from fit_unlearn.engine.config import build_config

prepared, out = sys.argv[1], Path(sys.argv[2])
acc = Accelerator(cpu=True)
cfg = build_config(
    {
        "prepared": prepared,
        "out": str(out / "run"),
        "stream": {"limit": 3},
        "strategy": {"objective": "graddiff"},
        "update": {"lr": 1e-3, "epochs": 1},
        "eval": {"every": None, "at_end": False},
        "checkpoint": {"every": 2},
    }
)
eng = Engine(cfg, accelerator=acc, progress=False)
eng.run()
eng.close()
h = hashlib.sha256()
for k, v in sorted(eng.model.state_dict().items()):
    h.update(k.encode())
    h.update(v.detach().cpu().numpy().tobytes())
(out / f"rank{acc.process_index}.txt").write_text(f"{acc.num_processes} {h.hexdigest()}")
torch.distributed.barrier() if torch.distributed.is_initialized() else None
