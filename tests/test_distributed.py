"""The distributed paths, 2 CPU processes (torchrun, gloo) on the tiny prepared model.

* replicated data parallel: identical weights on both ranks, one journal, and rank-correct retain sampling
  (each rank draws its own retain batches; rank 0 draws what a single process draws);
* FSDP2 sharding (torch ``fully_shard``; accelerate enables its FSDP plugin on accelerators only) with FIT's
  per-request choice of trainable layers: consistent weights on both ranks, a checkpoint that loads as a
  plain model, and the same weights as the replicated run within round-off.
"""

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fit_unlearn.engine import Engine, Journal
from fit_unlearn.engine.config import build_config
from fit_unlearn.engine.distributed import resolve_sharding, retain_stream
from fit_unlearn.errors import ConfigError
from fit_unlearn.layout import CheckpointDir, PreparedDir

WORKER = Path(__file__).with_name("_dist_worker.py")

#: FIT with its layer attribution only (one of the tiny model's 3 layers per request, chosen per request), and an
#: objective with a retain term and a frozen reference (sharded too): NPO + KL on retain documents
FIT_LAYERS = {
    "strategy": {
        "name": "fit",
        "objective": "npo_kl",
        "fit": {"filter": False, "importance": False, "layers": {"k": 1, "relative": True}},
    },
    # FIT's units of the paper (every weight of the layers T chooses), open loop: sharding is for weight updates
    "update": {
        "lr": 1e-2,
        "epochs": 1,
        "retain_batch_size": 1,
        "retain_match": False,
        "trainable": "full",
        "template_max_df": None,
    },
    "loop": {"enabled": False},
    "stream": {"limit": 3},
    # the evaluation at t=3 makes the one at the end redundant, and the checkpoint after the last request makes
    # the final one redundant: branches every rank must take alike (both are collectives when sharded)
    "eval": {"every": 3, "at_end": True, "batch_size": 8},
    "checkpoint": {"every": 1},
}


def _launch(prepared, out: Path, mode: str, port: int, overrides: dict | None = None) -> list[dict]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            str(port),
            str(WORKER),
            str(prepared),
            str(out),
            mode,
            json.dumps(overrides or {}),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return [json.loads((out / f"rank{i}.json").read_text()) for i in (0, 1)]


def _applied(out: Path) -> list[dict]:
    j = Journal(out / "run" / "journal.jsonl", writer=False)
    assert sum(e["event"] == "start" for e in j.events) == 1
    return [e for e in j.events if e["event"] == "applied"]


def _final_weights(out: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    ck = Journal(out / "run" / "journal.jsonl", writer=False).last_checkpoint()
    return load_file(str(CheckpointDir(Path(ck["path"])).model / "model.safetensors"))


@pytest.fixture(scope="module")
def replicated(tiny_prepared, tmp_path_factory):
    out = tmp_path_factory.mktemp("dist-replicated")
    return out, _launch(tiny_prepared, out, "replicated", 29517)


@pytest.mark.slow
def test_two_ranks_identical_weights_one_journal(replicated):
    out, (r0, r1) = replicated
    assert r0["world"] == r1["world"] == 2  # really two ranks
    assert r0["weights"] == r1["weights"]  # identical weights
    assert len(_applied(out)) == 3  # written once, not once per rank


@pytest.mark.slow
def test_each_rank_draws_its_own_retain_batches(replicated, tiny_prepared, tmp_path):
    """The field's data-parallel bug: every rank seeded alike draws the same retain batch, so data parallel
    adds no retain diversity.  Here rank 1 draws other documents than rank 0, and rank 0 draws exactly what a
    single process draws."""
    out, (r0, r1) = replicated
    assert len(r0["retain_drawn"]) == len(r1["retain_drawn"]) == 3
    assert all(r0["retain_drawn"])
    assert all(a != b for a, b in zip(r0["retain_drawn"], r1["retain_drawn"], strict=True))
    # the journal (written by the main process) holds rank 0's draws
    assert [e["record"]["retain_drawn"] for e in _applied(out)] == r0["retain_drawn"]
    single = build_config(
        {
            "prepared": str(tiny_prepared),
            "out": str(tmp_path / "single"),
            "stream": {"limit": 3},
            "strategy": {"objective": "graddiff"},
            "update": {"lr": 1e-3, "epochs": 1},
            "eval": {"every": None, "at_end": False},
            "checkpoint": {"every": 2},
        }
    )
    eng = Engine(single, progress=False)
    try:
        res = eng.run()
    finally:
        eng.close()
    assert [r["retain_drawn"] for r in res["requests"]] == r0["retain_drawn"]


def test_retain_stream_per_rank():
    rng = random.Random(7)
    assert retain_stream(rng, 7, 0) is rng  # rank 0 = the single-process stream, untouched
    pool = list(range(50))
    draws = [retain_stream(random.Random(7), 7, r).sample(pool, 5) for r in range(4)]
    assert len({tuple(d) for d in draws}) == 4
    assert retain_stream(random.Random(7), 7, 3).sample(pool, 5) == draws[3]  # reproducible


def test_sharding_needs_processes():
    assert not resolve_sharding(None, "auto").sharded
    with pytest.raises(ConfigError, match="several processes"):
        resolve_sharding(None, "fsdp")
    with pytest.raises(ConfigError, match="unknown mode"):
        resolve_sharding(None, "zero3")


@pytest.fixture(scope="module")
def fsdp_run(tiny_prepared, tmp_path_factory):
    out = tmp_path_factory.mktemp("dist-fsdp")
    return out, _launch(tiny_prepared, out, "fsdp", 29527, FIT_LAYERS)


@pytest.mark.slow
def test_fsdp_changing_trainable_layers(fsdp_run, tiny_prepared, tmp_path_factory):
    """FSDP2 over 2 gloo ranks, FIT choosing the trained layer per request (a fresh AdamW over that layer's
    sharded parameters each time), a sharded frozen reference, evaluation joined by both ranks."""
    from fit_unlearn.models import load_model

    sharded_out, (s0, s1) = fsdp_run
    assert s0["world"] == s1["world"] == 2 and s0["sharded"] and s1["sharded"]
    assert s0["sharding"] == "fsdp"
    assert s0["weights"] == s1["weights"]  # the gathered full weights agree on both ranks
    assert s0["layers"] == s1["layers"]  # every rank planned the same layers
    assert len({tuple(x) for x in s0["layers"]}) > 1, s0["layers"]  # the trainable set changed across requests
    assert all(a != b for a, b in zip(s0["retain_drawn"], s1["retain_drawn"], strict=True))
    applied = _applied(sharded_out)
    assert len(applied) == 3
    assert [e["record"]["receipt"]["layers"]["layers"] for e in applied] == s0["layers"]
    evals = [e for e in Journal(sharded_out / "run" / "journal.jsonl", writer=False).events if e["event"] == "eval"]
    assert len(evals) == 1 and evals[0]["t"] == 3  # one evaluation, journaled once
    assert len(list((sharded_out / "run" / "evals").glob("*"))) == 1

    # the checkpoint is a plain, loadable model with the full weights
    ck = Journal(sharded_out / "run" / "journal.jsonl", writer=False).last_checkpoint()
    model, _ = load_model(CheckpointDir(Path(ck["path"])).model)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert not any(type(p).__name__ == "DTensor" for p in model.parameters())

    # and it equals the unsharded (replicated, hand all-reduced) run of the same configuration within round-off
    plain_out = tmp_path_factory.mktemp("dist-fsdp-ref")
    p0, _ = _launch(tiny_prepared, plain_out, "replicated", 29537, FIT_LAYERS)
    assert p0["sharding"] == "none" and not p0["sharded"]
    assert p0["layers"] == s0["layers"] and p0["retain_drawn"] == s0["retain_drawn"]
    sharded, plain = _final_weights(sharded_out), _final_weights(plain_out)
    assert sharded.keys() == plain.keys()
    for k in plain:
        torch.testing.assert_close(sharded[k], plain[k], rtol=1e-4, atol=1e-5, msg=k)
    # the run changed the weights: the comparison is not between two untouched models
    theta0, _ = load_model(PreparedDir(tiny_prepared).model("theta0"))
    assert any(not torch.equal(plain[k], v) for k, v in theta0.state_dict().items() if k in plain)


@pytest.mark.slow
def test_accelerate_fsdp2_preparation(fsdp_run, tiny_prepared, tmp_path_factory):
    """The GPU path (accelerate's own FSDP2 preparation, from an FSDP launch config), run on gloo with the
    accelerator state set as on GPUs (accelerate itself never enables FSDP on CPU): same result as fully_shard."""
    sharded_out, (s0, _) = fsdp_run
    out = tmp_path_factory.mktemp("dist-acc-fsdp")
    a0, a1 = _launch(tiny_prepared, out, "accelerate-fsdp", 29547, FIT_LAYERS)
    assert a0["sharding"] == a1["sharding"] == "accelerate" and a0["sharded"]
    assert a0["weights"] == a1["weights"] and a0["layers"] == s0["layers"]
    mine, theirs = _final_weights(out), _final_weights(sharded_out)
    for k in theirs:
        torch.testing.assert_close(mine[k], theirs[k], rtol=1e-4, atol=1e-5, msg=k)


class _FakeAcc:
    num_processes, process_index, device = 2, 0, "cpu"

    def __init__(self, kind: str, version: int | None = None):
        self.distributed_type = kind
        self.state = type("S", (), {"fsdp_plugin": type("P", (), {"fsdp_version": version})()})()


def test_sharding_from_the_launch():
    assert resolve_sharding(_FakeAcc("FSDP", 2)).kind == "accelerate"
    assert resolve_sharding(_FakeAcc("MULTI_CPU")).kind == "none"
    assert resolve_sharding(_FakeAcc("MULTI_CPU"), "fsdp").kind == "fsdp"
    with pytest.raises(ConfigError, match="FSDP1"):
        resolve_sharding(_FakeAcc("FSDP", 1))
    with pytest.raises(ConfigError, match="DeepSpeed"):
        resolve_sharding(_FakeAcc("DEEPSPEED"))


def test_sharding_refuses_what_needs_whole_gradients(tiny_prepared, tmp_path):
    from fit_unlearn.engine.distributed import Sharding, check_supported

    cfg = build_config({"prepared": str(tiny_prepared), "out": str(tmp_path), "update": {"saliency": 0.1}})
    check_supported(cfg, Sharding("none"))
    with pytest.raises(ConfigError, match="saliency"):
        check_supported(cfg, Sharding("fsdp"))
    cfg = build_config(
        {"prepared": str(tiny_prepared), "out": str(tmp_path), "loop": {"enabled": True, "target": "base"}}
    )
    check_supported(cfg, Sharding("none"))
    with pytest.raises(ConfigError, match="loop.target: base is not supported with sharding"):
        check_supported(cfg, Sharding("fsdp"))
