"""Run by test_distributed via torchrun: one engine per rank over gloo (CPU).

argv: prepared, out, mode (``replicated``: every rank holds the whole model; ``fsdp``: FSDP2-sharded, with
FIT's per-request layer choice), config overrides as JSON.  Each rank writes ``rank<i>.json``: the world
size, a hash of the full weights (gathered when sharded), the retain draws of each request, and the layers
each request trained.
"""

import hashlib
import json
import sys
from pathlib import Path

import torch
from accelerate import Accelerator

from fit_unlearn.engine import Engine
from fit_unlearn.engine.config import build_config

prepared, out, mode = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
overrides = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
acc = Accelerator(cpu=True)
if mode == "accelerate-fsdp":
    # accelerate enables its FSDP plugin on accelerators only (on CPU its state stays MULTI_CPU and drops the
    # plugin): set the state as an FSDP2 launch on GPUs does, to run accelerate's own FSDP2 preparation on gloo
    from accelerate import FullyShardedDataParallelPlugin
    from accelerate.utils import DistributedType

    acc.state.fsdp_plugin = FullyShardedDataParallelPlugin(
        fsdp_version=2, auto_wrap_policy="transformer_based_wrap", reshard_after_forward=True
    )
    acc.state.distributed_type = DistributedType.FSDP
    assert acc.is_fsdp2
cfg = build_config(
    {
        "prepared": prepared,
        "out": str(out / "run"),
        "stream": {"limit": 3},
        "strategy": {"objective": "graddiff"},
        "update": {"lr": 1e-3, "epochs": 1},
        "eval": {"every": None, "at_end": False},
        "checkpoint": {"every": 2},
        **overrides,
    }
)
eng = Engine(cfg, accelerator=acc, progress=False, shard={"fsdp": "fsdp", "replicated": "none"}.get(mode, "auto"))
records = []  # this rank's records (the journal holds the main process's only)
apply = eng._apply


def _capture(position, request):
    rec = apply(position, request)
    records.append(rec)
    return rec


eng._apply = _capture
eng.run()
eng.close()

if mode != "replicated":  # every rank gathers the full weights (a collective), to compare them across ranks
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(eng.model, options=StateDictOptions(full_state_dict=True, cpu_offload=False))
    sharded = any(type(p).__name__ == "DTensor" for p in eng.model.parameters())
else:
    state, sharded = eng.model.state_dict(), False
h = hashlib.sha256()
for k, v in sorted(state.items()):
    h.update(k.encode())
    h.update(v.detach().cpu().numpy().tobytes())
report = {
    "world": acc.num_processes,
    "sharding": eng.sharding.kind,
    "sharded": sharded,
    "weights": h.hexdigest(),
    "retain_drawn": [r.get("retain_drawn") for r in records],
    "layers": [r.get("receipt", {}).get("layers", {}).get("layers") for r in records],
}
(out / f"rank{acc.process_index}.json").write_text(json.dumps(report))
torch.distributed.barrier() if torch.distributed.is_initialized() else None
