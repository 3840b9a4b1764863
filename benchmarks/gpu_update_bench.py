"""GPU check: one request's update on CUDA in bf16, measured (not projected), per model size and trainable set.

Llama-shaped models built from a config (random init on the GPU, nothing downloaded): ~1B (hidden 2048, 16
layers), ~3B (hidden 3072, 28 layers) and Llama-3-8B's shape (hidden 4096, 32 layers, MLP 14336, 8 KV heads),
vocabulary 49152 (the default model's tokenizer).  Each measurement is one call of ``engine.update.apply_update``
(``STEPS`` AdamW steps on 512-character slices of a synthetic request) in one process, one after another, the
model and reference rebuilt for each; it records ``torch.cuda.max_memory_allocated`` over the update (the
record's ``peak_memory_bytes``), the seconds per step, and the analytic prediction of docs/gpu.md (bytes per
weight: 2 bf16 + 4 fp32 master + 4 fp32 gradient + 8 AdamW per trained weight, 2 per frozen one, 2 more per
weight for the reference copy when the objective has one; activations not counted, so measured/predicted
is expected a little above 1).

    python benchmarks/gpu_update_bench.py --tokenizer DIR --out results.json     (on a machine with CUDA)

Modes: ``full`` (every weight; NPO, which needs theta_0), ``layers`` (FIT's 25% of the layers, every 4th; NPO),
``lora`` (r 8, every linear of every block; NPO, merge mode: a reference copy), ``rows`` (the request's own
tokens' embedding rows; GA, no reference).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

GiB = 2**30
SHAPES = {
    "tiny": dict(
        hidden_size=64, num_hidden_layers=4, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2
    ),
    "1b": dict(
        hidden_size=2048, num_hidden_layers=16, intermediate_size=8192, num_attention_heads=32, num_key_value_heads=8
    ),
    "3b": dict(
        hidden_size=3072, num_hidden_layers=28, intermediate_size=8192, num_attention_heads=24, num_key_value_heads=8
    ),
    "8b": dict(
        hidden_size=4096, num_hidden_layers=32, intermediate_size=14336, num_attention_heads=32, num_key_value_heads=8
    ),
}
STEPS = 3
DEVICE = "cuda"  #: --device cpu: a smoke run of the script itself (peak = resident memory then)
TEXT = (
    "Name: Quorvina T. Blaxendale\n\nAge: 47\n\nAddress: 12 Zentrick Row, Vellmoor, OR 90210\n\nOccupation: Glass "
    "restorer\n\nDescription: Quorvina restores stained glass for the Vellmoor chapel and keeps bees. "
) * 3


def build(shape: str, tok):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=len(tok),
        max_position_embeddings=2048,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        tie_word_embeddings=False,
        **SHAPES[shape],
    )
    with torch.device(DEVICE):
        torch.manual_seed(0)
        model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    return model.eval()


def _sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def predicted(model, trained: int, reference: bool) -> float:
    n = sum(p.numel() for p in model.parameters())
    return (2 * n + 16 * trained + (2 * n if reference else 0)) / GiB


def measure(shape: str, mode: str, tok) -> dict:
    from fit_unlearn.data.documents import Document
    from fit_unlearn.engine.update import UpdateConfig, apply_update
    from fit_unlearn.layers import num_layers
    from fit_unlearn.objectives import resolve_objective
    from fit_unlearn.strategies.base import UpdatePlan

    model = build(shape, tok)
    n_layers = num_layers(model)
    objective = "ga" if mode == "rows" else "npo"
    ref = None
    if objective != "ga" and mode != "rows":
        ref = build(shape, tok)  # theta_0's copy, as the engine loads it
    trainable = list(range(0, n_layers, 4)) if mode == "layers" else "all"
    cfg = UpdateConfig(
        lr=1e-4,
        epochs=STEPS,
        slice_chars=100_000,
        reference_cache_mb=0,
        trainable={"layers": "full", "full": "full", "lora": "lora", "rows": "rows"}[mode],
    )
    plan = UpdatePlan(text=TEXT, objective=resolve_objective(objective), trainable=trainable, qa=())
    rows = sorted(set(tok(" Quorvina Blaxendale Zentrick Vellmoor")["input_ids"])) if mode == "rows" else None
    retain = [Document(id="r0", text="Name: Ann Lee\n\nAge: 30\n\nOccupation: Baker", domain="personal", qa=())]
    _sync()
    t0 = time.perf_counter()
    rec = apply_update(model, ref, tok, plan, retain, cfg, seed=0, rows=rows)
    _sync()
    wall = time.perf_counter() - t0
    trained = rec["params_touched"]
    # lora/rows: the optimizer's trained set (adapter weights; the embedding matrix with masked rows)
    if mode == "rows":
        trained_opt = model.get_input_embeddings().weight.numel()
    else:
        trained_opt = trained
    out = {
        "shape": shape,
        "mode": mode,
        "objective": objective,
        "params": sum(p.numel() for p in model.parameters()),
        "trained": trained,
        "peak_gib": rec["peak_memory_bytes"] / GiB,
        "predicted_gib": predicted(model, trained_opt, ref is not None),
        "steps": rec["steps"],
        "seconds": wall,
        "seconds_per_step": rec["seconds"] / max(rec["steps"], 1),
        "loss_first": rec["loss_first"],
        "loss_last": rec["loss_last"],
    }
    out["measured_over_predicted"] = out["peak_gib"] / out["predicted_gib"]
    del model, ref
    gc.collect()
    if DEVICE == "cuda":
        torch.cuda.empty_cache()
    return out


def main() -> None:
    from transformers import AutoTokenizer

    from fit_unlearn.models import prepare_tokenizer

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument(
        "--runs",
        default="1b:full,1b:layers,1b:lora,1b:rows,3b:full,3b:layers,3b:lora,3b:rows,8b:layers,8b:lora,8b:rows",
    )
    args = ap.parse_args()
    global DEVICE
    DEVICE = args.device
    tok = AutoTokenizer.from_pretrained(args.tokenizer)
    prepare_tokenizer(tok)
    res = {
        "device": torch.cuda.get_device_name(0) if DEVICE == "cuda" else DEVICE,
        "torch": torch.__version__,
        "command": " ".join(sys.argv),
        "rows": [],
    }
    for item in args.runs.split(","):
        shape, mode = item.split(":")
        try:
            row = measure(shape, mode, tok)
        except torch.OutOfMemoryError as e:
            row = {"shape": shape, "mode": mode, "error": f"out of memory: {str(e).splitlines()[0]}"}
            gc.collect()
            torch.cuda.empty_cache()
        res["rows"].append(row)
        print(json.dumps(row), flush=True)
        with open(args.out, "w") as fh:
            json.dump(res, fh, indent=1)


if __name__ == "__main__":
    main()
