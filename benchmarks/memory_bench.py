"""Benchmark: peak memory of one request's update against model size, for full / targeted layers / LoRA.

Llama-shaped models (random init from a ``LlamaConfig``, nothing downloaded; GQA with 4 query heads per
key-value head as Llama-3, MLP 3.5x hidden, vocabulary 49152 as SmolLM2, untied embeddings) from ~80M
parameters up to the largest whose peak stays under the memory cap.  Each measurement is one request of
``engine.update.apply_update`` (NPO against a frozen theta_0: 2 steps on 128-token slices, AdamW over the
trainable set only; the peak is reached in the first step's optimizer update, once gradients and AdamW states
are both alive) in a fresh subprocess, so that its peak resident memory is its own:

* ``rss_loaded``: resident memory once the model (and the reference copy) are built;
* ``peak``: the peak resident memory of the update itself (VmHWM, reset just before ``apply_update``);
* seconds for the request's 2 optimizer steps (``apply_update``'s scoring of the request before and after,
  two no-grad forwards, is stubbed out in the child: it costs CPU time and no memory of note).

Modes: ``full`` (every weight), ``layers`` (25% of the decoder layers, every 4th from layer 0: FIT-like,
the worst case for activations), ``lora`` (r=8 on every linear layer of every block).  dtypes: fp32, and
bf16 with fp32 master weights (``update.master_weights``).  Reference: ``copy`` (a second model, as the
engine loads theta_0), ``none`` (LoRA stack mode: theta_0 is the model with its adapters off) or
``cached`` (theta_0's outputs on the request's slices computed before the update, no copy kept: what a
prefetching cache would allow).  A watchdog kills a child whose resident memory passes the cap.

Results: benchmarks/results/memory-<name>.json (resumable: measurements already there are skipped) and
.md, with the fit ``peak = a + b * params`` per (mode, dtype, reference), the analytic breakdown checked
against every measurement, and the projection to 7B / 8B / 14B on a GPU in bf16.

    PYTHONPATH=src python benchmarks/memory_bench.py            # the whole ladder (31 min on 2 busy shared cores)
    PYTHONPATH=src python benchmarks/memory_bench.py --report   # tables from the json only
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

GiB = 2**30
VOCAB = 49152
SEQ = 128
STEPS = 2
BASELINE = 0.45 * GiB  #: python + torch + transformers + peft resident before any model (0.42 measured: baseline_rss)


# ---- model shapes ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Shape:
    name: str
    hidden: int
    layers: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int = VOCAB
    tied: bool = False

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def block_params(self) -> int:
        h, kv = self.hidden, self.kv_heads * self.head_dim
        return 2 * h * h + 2 * h * kv + 3 * h * self.intermediate + 2 * h

    def params(self) -> int:
        emb = self.vocab * self.hidden * (1 if self.tied else 2)
        return emb + self.layers * self.block_params() + self.hidden

    def lora_params(self, r: int = 8, layers: int | None = None) -> int:
        h, kv, i = self.hidden, self.kv_heads * self.head_dim, self.intermediate
        per = r * ((h + h) + 2 * (h + kv) + (h + h) + 2 * (h + i) + (i + h))
        return per * (self.layers if layers is None else layers)


def ladder_shape(name: str, hidden: int, layers: int) -> Shape:
    heads = hidden // 64
    return Shape(name, hidden, layers, int(round(3.5 * hidden / 64)) * 64, heads, max(1, heads // 4))


LADDER = [
    ladder_shape("s80m", 512, 8),
    ladder_shape("s170m", 768, 12),
    ladder_shape("s320m", 1024, 16),
    ladder_shape("s640m", 1536, 16),
    ladder_shape("s1.1b", 2048, 16),
    ladder_shape("s1.6b", 2048, 24),
]
#: the projection targets (published configurations)
TARGETS = [
    Shape("Llama-2-7B", 4096, 32, 11008, 32, 32, vocab=32000),
    Shape("Qwen2.5-7B", 3584, 28, 18944, 28, 4, vocab=152064),
    Shape("Llama-3-8B", 4096, 32, 14336, 32, 8, vocab=128256),
    Shape("Qwen2.5-14B", 5120, 48, 13824, 40, 8, vocab=152064),
]


def trainable(shape: Shape, mode: str) -> int:
    if mode == "full":
        return shape.params()
    if mode == "layers":
        return len(layer_ids(shape)) * shape.block_params()
    return shape.lora_params()


def layer_ids(shape: Shape) -> list[int]:
    return list(range(0, shape.layers, 4))  # 25% of the layers, spread from the first (worst case: activations)


# ---- analytic model ----------------------------------------------------------------------------------------
def activations(shape: Shape, mode: str, tokens: int, wb: int, checkpointing: bool = False) -> int:
    """Bytes autograd keeps for one backward on ``tokens`` tokens (batch 1, SDPA attention, no checkpointing):
    per token and block the inputs of the 7 linear layers, the two RMSNorm inputs (fp32 upcasts) and the MLP's
    gate/up/act products; the logits in fp32 a few times over (model dtype, float upcast, log-softmax, grad).
    ``layers`` mode keeps them only from the first trainable block up (here: block 0, the worst case)."""
    h, i, kv = shape.hidden, shape.intermediate, shape.kv_heads * shape.head_dim
    per_block = (6 * h + 2 * kv + 4 * i) * wb + 4 * h * 4
    logits = tokens * shape.vocab * (wb + 3 * 4)
    if checkpointing:  # each block's input, and one block recomputed at a time
        return tokens * (shape.layers * h * wb + per_block) + logits
    return tokens * shape.layers * per_block + logits


def largest_trainable(shape: Shape, mode: str) -> int:
    if mode == "full":
        return shape.vocab * shape.hidden
    if mode == "layers":
        return shape.hidden * shape.intermediate
    return 8 * (shape.hidden + shape.intermediate)


def breakdown(
    shape: Shape,
    mode: str,
    dtype: str,
    reference: str,
    tokens: int = SEQ,
    adamw: str = "loop",
    masters: bool = True,
    checkpointing: bool = False,
) -> dict[str, int]:
    """Bytes per component of one request's update at its peak, the optimizer step: weights, reference,
    gradients, AdamW states and master copies all alive, plus the optimizer's temporaries and the activations
    of the backward that just ran (freed by then on a GPU's caching allocator only into its pool).

    ``adamw``: how torch runs AdamW, which sets its temporaries: ``loop`` (CPU default, one tensor at a
    time: two temporaries the size of the largest trainable tensor), ``foreach`` (CUDA default: one
    temporary the size of every trainable tensor's state at once, ``_foreach_sqrt(exp_avg_sqs)``) or
    ``fused`` (none)."""
    p, t = shape.params(), trainable(shape, mode)
    wb = 4 if dtype == "fp32" else 2
    lora = mode == "lora"
    masters = masters and dtype == "bf16" and not lora
    sb = 4 if (lora or masters) else wb  # AdamW states: the dtype of what it steps (PEFT adapters are fp32)
    out = {
        "weights": p * wb + (t * 4 if lora else 0),
        "reference": p * wb if reference == "copy" else 0,
        # with master weights each 16-bit gradient is handed to its fp32 copy one by one: only fp32 ones remain
        "grads": t * (4 if masters else sb),
        "adam": t * 2 * sb,
        "masters": t * 4 if masters else 0,
        "adam_temporaries": {"loop": 2 * largest_trainable(shape, mode) * sb, "foreach": t * sb, "fused": 0}[adamw],
        "activations": activations(shape, mode, tokens, wb, checkpointing),
    }
    out["total"] = sum(out.values())
    return out


def step_flops(shape: Shape, mode: str, tokens: int, reference: str, checkpointing: bool = False) -> float:
    """Multiply-add FLOPs of one step: forward 2PT, backward 2PT through the activations plus 2PT for the
    weight gradients of the trainable set, a reference forward 2PT (every step without a cache, 'copy' and
    'none'), a recomputed forward with checkpointing.  P: the matmul weights (the input embedding is a lookup)."""
    p = shape.params() - shape.vocab * shape.hidden * (0 if shape.tied else 1)
    t = p if mode == "full" else trainable(shape, mode)
    ref = 2 * p if reference in ("copy", "none") else 0
    return tokens * (2 * p + 2 * p + 2 * t + ref + (2 * p if checkpointing else 0))


# ---- one measurement (child process) -----------------------------------------------------------------------
def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def _tokenizer():
    from fit_unlearn.models import cache_dir, prepare_tokenizer, train_tokenizer

    path = cache_dir() / "models" / "SmolLM2-135M-Instruct"
    if (path / "tokenizer.json").exists():
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(path))
    else:  # no cached default model: a small trained tokenizer (ids stay below the model's vocabulary)
        tok = train_tokenizer([_text(64)], vocab_size=2000)
    prepare_tokenizer(tok)
    return tok


def _text(slices: int) -> str:
    import random

    rng = random.Random(0)
    words = ["delta", "river", "Vienna", "quartz", "seven", "orbit", "maple", "carbon", "lumen", "tundra"]
    return "\n\n".join(" ".join(f"{rng.choice(words)}{rng.randint(0, 999)}" for _ in range(400)) for _ in range(slices))


def child(spec: dict) -> dict:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from fit_unlearn.engine.adapters import Adapters, LoraSection, WithoutAdapters
    from fit_unlearn.engine.update import ReferenceCache, UpdateConfig, apply_update, forget_examples
    from fit_unlearn.objectives import resolve_objective
    from fit_unlearn.strategies.base import UpdatePlan

    torch.set_num_threads(int(os.environ.get("MEM_BENCH_THREADS", "2")))
    shape = next(s for s in LADDER if s.name == spec["shape"])
    dtype = torch.float32 if spec["dtype"] == "fp32" else torch.bfloat16
    tok = _tokenizer()
    base_rss = _status("VmRSS")
    cfg = LlamaConfig(
        vocab_size=shape.vocab,
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        max_position_embeddings=2048,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        tie_word_embeddings=shape.tied,
        attn_implementation="sdpa",
    )
    t0 = time.perf_counter()
    torch.manual_seed(0)
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # built in its dtype: no fp32 copy on the way
    try:
        model = LlamaForCausalLM(cfg).eval()
        ref = None
        if spec["reference"] == "copy":
            import copy

            ref = copy.deepcopy(model).eval()
            for p in ref.parameters():
                p.requires_grad_(False)
    finally:
        torch.set_default_dtype(old)
    build_s = time.perf_counter() - t0
    n_params = sum(p.numel() for p in model.parameters())

    upd = UpdateConfig(
        lr=3e-5,
        epochs=1,
        slice_chars=4000,
        max_len=SEQ,
        retain_batch_size=0,
        reference_cache_mb=0 if spec["reference"] == "copy" else 4096,
        trainable="lora" if spec["mode"] == "lora" else "full",
        lora=LoraSection(r=8, mode="stack" if spec["reference"] == "none" else "merge"),
        gradient_checkpointing=spec.get("checkpointing", False),
        master_weights=spec.get("masters", True),
    )
    text = _text(STEPS)
    plan = UpdatePlan(
        text=text,
        objective=resolve_objective("npo"),
        trainable=layer_ids(shape) if spec["mode"] == "layers" else "all",
    )
    adapters = cache = None
    if spec["reference"] == "none":
        adapters = Adapters(model, upd.lora)
        ref = WithoutAdapters(model, adapters)
    elif spec["reference"] == "cached":  # theta_0 = the model before the update: its outputs, then no copy
        cache = ReferenceCache(upd.reference_cache_mb)
        _, ex = forget_examples(tok, text, (), upd)
        with torch.no_grad():
            for i, e in enumerate(ex):
                cache.outputs(model, [e], [("forget", i)], tok.pad_token_id, torch.device("cpu"), None)
    import fit_unlearn.engine.update as update_module

    if spec.get("adamw"):  # CUDA's default (foreach) or the fused kernel, instead of CPU's one-tensor loop
        import functools

        kind = {"foreach": {"foreach": True}, "fused": {"fused": True}}[spec["adamw"]]
        torch.optim.AdamW = functools.partial(torch.optim.AdamW, **kind)

    update_module.mean_ce = lambda *a, **k: [None]  # CPU time only: the two no-grad scoring forwards
    rss_loaded = _status("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS: the peak below is the update's own
    rec = apply_update(model, ref, tok, plan, [], upd, seed=0, ref_cache=cache, adapters=adapters)
    peak = _status("VmHWM")
    return {
        **spec,
        "params": n_params,
        "params_expected": shape.params(),
        "trainable": rec["params_touched"],
        "steps": rec["steps"],
        "tokens": SEQ,
        "finite": all(x == x for x in rec["losses"]),
        "baseline_rss": base_rss,
        "rss_loaded": rss_loaded,
        "peak": peak,
        "ru_maxrss": rec["peak_memory_bytes"],
        "build_seconds": round(build_s, 2),
        "seconds": round(rec["seconds"], 2),
        "cache_hits": (rec.get("reference_cache") or {}).get("hits"),
    }


# ---- the plan of measurements ------------------------------------------------------------------------------
def plan() -> list[dict]:
    rows = []
    sizes = {s.name: s for s in LADDER}

    def add(shape, mode, dtype, reference="copy", **extra):
        key = "-".join([shape, mode, dtype, reference, *(f"{k}={v}" for k, v in extra.items())])
        rows.append({"key": key, "shape": shape, "mode": mode, "dtype": dtype, "reference": reference, **extra})

    for dtype in ("fp32", "bf16"):
        for s in ("s80m", "s170m", "s320m"):
            add(s, "full", dtype)
        for s in ("s80m", "s170m", "s320m", "s640m"):
            add(s, "layers", dtype)
        for s in ("s80m", "s170m", "s320m", "s640m"):
            add(s, "lora", dtype)
    add("s320m", "full", "fp32", "cached")  # the reference copy is the only difference
    add("s320m", "full", "bf16", masters=False)  # what the fp32 master copies cost
    add("s320m", "full", "fp32", checkpointing=True)  # what activation checkpointing saves at 256 tokens
    for s in ("s320m", "s1.1b"):
        add(s, "lora", "bf16", "none")  # stack mode: no reference copy
    # the top of the ladder: the largest models whose update stays under the cap (bf16)
    add("s1.1b", "layers", "bf16")
    add("s1.1b", "lora", "bf16")
    add("s1.6b", "lora", "bf16", "none")
    for kind in ("foreach", "fused"):
        add("s170m", "full", "fp32", adamw=kind)  # the optimizer's temporaries: CUDA's default and the fused kernel
    for r in rows:
        r["predicted"] = predict(sizes[r["shape"]], r)["total"] + BASELINE
    return rows


def predict(shape: Shape, r: dict) -> dict[str, int]:
    return breakdown(
        shape,
        r["mode"],
        r["dtype"],
        r["reference"],
        adamw=r.get("adamw", "loop"),
        masters=r.get("masters", True),
        checkpointing=r.get("checkpointing", False),
    )


def watch(cmd: list[str], cap: int, timeout: float) -> tuple[int, str, int]:
    """Run ``cmd``, killing it when its resident memory passes ``cap``; returns (rc, stdout, max RSS seen)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen, t0 = 0, time.time()
    while proc.poll() is None:
        try:
            for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    seen = max(seen, int(line.split()[1]) * 1024)
        except OSError:
            pass
        if seen > cap or time.time() - t0 > timeout:
            proc.kill()
            proc.wait()
            return -9, "", seen
        time.sleep(0.05)
    out, err = proc.communicate()
    if proc.returncode:
        sys.stderr.write(err[-3000:])
    return proc.returncode, out, seen


# ---- analysis ----------------------------------------------------------------------------------------------
def fit_lines(rows: list[dict]) -> dict[str, dict]:
    groups: dict[str, list[dict]] = {}
    for r in rows:
        if "peak" in r and not r.get("checkpointing") and r.get("masters", True) and not r.get("adamw"):
            groups.setdefault(f"{r['mode']}/{r['dtype']}/{r['reference']}", []).append(r)
    out = {}
    for g, rs in groups.items():
        if len(rs) < 2:
            continue
        xs, ys = [r["params"] for r in rs], [r["peak"] for r in rs]
        n, mx, my = len(xs), sum(xs) / len(xs), sum(ys) / len(ys)
        sxx = sum((x - mx) ** 2 for x in xs)
        b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
        ts = [r["seconds"] / (r["params"] * r["tokens"] * r["steps"]) for r in rs]
        out[g] = {"a_GiB": (my - b * mx) / GiB, "b_bytes_per_param": b, "n": n, "sec_per_param_token": ts}
    return out


def gpu_projection() -> list[dict]:
    """bf16 weights (fp32 masters and AdamW states for full / layers), on a GPU: AdamW as the engine builds it
    today (torch's CUDA default, ``foreach``) and with ``fused=True``; 768 tokens = a forget slice and a
    2-item retain batch of 256 tokens (GradDiff), 256 = one slice (NPO, GA)."""
    rows = []
    for t in TARGETS:
        for mode, ref, masters in (
            ("full", "copy", True),
            ("full", "copy", False),
            ("layers", "copy", True),
            ("lora", "copy", True),
            ("lora", "none", True),
        ):
            for tokens in (256, 768):
                bd = {
                    a: breakdown(t, mode, "bf16", ref, tokens, adamw=a, masters=masters) for a in ("foreach", "fused")
                }
                rows.append(
                    {
                        "model": t.name,
                        "params": t.params(),
                        "trainable": trainable(t, mode),
                        "mode": mode if masters or mode == "lora" else f"{mode}, no masters",
                        "ref": ref,
                        "tokens": tokens,
                        **{k: v / GiB for k, v in bd["fused"].items()},
                        "total_foreach": bd["foreach"]["total"] / GiB,
                    }
                )
    return rows


#: GPUs of the time projection: (name, bf16 dense FLOP/s, memory bandwidth bytes/s)
GPUS = [("H100 SXM 80GB", 989e12, 3.35e12), ("H200 141GB", 989e12, 4.8e12)]
MFU = 0.4  #: fraction of the peak FLOP/s a step of a few hundred tokens reaches when it is compute bound
LAUNCH = 0.02  #: seconds of kernel launches and Python per step (~3,000 kernels of a 32-layer model)


def gpu_step_seconds(shape: Shape, mode: str, tokens: int, ref_share: float, flops: float, bandwidth: float) -> float:
    """One step on a GPU in bf16: the larger of compute (FLOPs at ``MFU``) and memory traffic (weights read by
    the forward, the backward and the reference forward; bf16 gradients written; with master weights each
    gradient made fp32 (6 B/weight) and a fused AdamW step (30 B/weight: master, gradient, two states read,
    master and states written, the bf16 weight written back)), plus ``LAUNCH``.  ``ref_share``: the fraction
    of steps that run the reference (NPO with the cache: the first epoch, 1/3)."""
    p = shape.params() - shape.vocab * shape.hidden * (0 if shape.tied else 1)
    t = trainable(shape, mode)
    f = tokens * (6 * p if mode == "full" else 4 * p + 2 * t) + ref_share * 2 * p * tokens
    traffic = 2 * p * (2 + ref_share)
    if mode != "lora":
        traffic += t * (2 + 6 + 30)
    return max(f / (flops * MFU), traffic / bandwidth) + LAUNCH


def gflops(shape: Shape, r: dict) -> float:
    f = step_flops(shape, r["mode"], r["tokens"], r["reference"], r.get("checkpointing", False))
    return f * r["steps"] / r["seconds"] / 1e9


def report(data: dict) -> str:
    rows = [r for r in data["measurements"].values() if "peak" in r]
    rows.sort(key=lambda r: (r["mode"], r["dtype"], r["reference"], r["params"], r["key"]))
    sizes = {s.name: s for s in LADDER}
    lines = [
        "# Peak memory of one request's update (CPU, measured)",
        "",
        f"NPO against a frozen theta_0, {STEPS} AdamW steps on {SEQ}-token slices, batch 1, no retain batch; "
        "one fresh subprocess per row. peak = the update's peak resident memory (VmHWM reset just before "
        "`apply_update`); loaded = resident memory with the model (and reference) built; predicted = the "
        "analytic breakdown + the interpreter's baseline. Machine: "
        f"{data.get('machine', '?')}; command: `{data.get('command', '?')}`.",
        "",
        "| model | params | mode | dtype | reference | variant | trainable | loaded GiB | peak GiB | predicted GiB "
        "| peak/pred | s/request | GFLOP/s |",
        "|---|---:|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        variant = ",".join(
            [
                *(["checkpointing"] if r.get("checkpointing") else []),
                *(["no masters"] if not r.get("masters", True) else []),
                *([f"AdamW {r['adamw']}"] if r.get("adamw") else []),
            ]
        )
        pred = predict(sizes[r["shape"]], r)["total"] + r["baseline_rss"]
        lines.append(
            f"| {r['shape']} | {r['params'] / 1e6:.0f}M | {r['mode']} | {r['dtype']} | {r['reference']} | {variant} "
            f"| {r['trainable'] / 1e6:.1f}M | {r['rss_loaded'] / GiB:.2f} | {r['peak'] / GiB:.2f} | {pred / GiB:.2f} "
            f"| {r['peak'] / pred:.2f} | {r['seconds']:.1f} | {gflops(sizes[r['shape']], r):.1f} |"
        )
    skipped = [r for r in data["measurements"].values() if "peak" not in r]
    if skipped:
        lines += ["", "Not measured: " + "; ".join(f"{r['key']} ({r.get('skipped', '?')})" for r in skipped)]
    lines += [
        "",
        "## Fit: peak = a + b * params",
        "",
        "| mode/dtype/reference | n | a (GiB) | b (bytes/param) |",
        "|---|---:|---:|---:|",
    ]
    for g, f in sorted(fit_lines(rows).items()):
        lines.append(f"| {g} | {f['n']} | {f['a_GiB']:.2f} | {f['b_bytes_per_param']:.2f} |")
    lines += [
        "",
        "## Projection: bf16 on a GPU (analytic breakdown, GiB)",
        "",
        "weights bf16; reference = a bf16 copy of theta_0 (`copy`) or the model with its adapters off (LoRA stack,"
        " `none`); full / layers: fp32 master copies, their fp32 gradients and fp32 AdamW states; LoRA r=8 on every"
        " block linear, adapters and their states fp32; activations of `tokens` tokens, no checkpointing. Totals"
        " add 1 GiB (CUDA context, allocator slack); `fused`: AdamW(fused=True), `as is`: torch's CUDA default"
        " (foreach), whose step allocates one more fp32 copy of the trainable set.",
        "",
        "| model | params | mode | reference | tokens | weights | reference | grads | adam | masters | activations "
        "| total fused | total as is | fits 40 GB | fits 80 GB |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for p in gpu_projection():
        fused, as_is = p["total"] + 1.0, p["total_foreach"] + 1.0

        def fits(card: float, fused=fused, as_is=as_is) -> str:
            cap = card * 1e9 / GiB * 0.95
            return "yes" if as_is < cap else ("fused only" if fused < cap else "no")

        lines.append(
            f"| {p['model']} | {p['params'] / 1e9:.2f}B | {p['mode']} | {p['ref']} | {p['tokens']} "
            f"| {p['weights']:.1f} | {p['reference']:.1f} | {p['grads']:.1f} | {p['adam']:.1f} | {p['masters']:.1f} "
            f"| {p['activations']:.1f} | {fused:.1f} | {as_is:.1f} | {fits(40)} | {fits(80)} |"
        )
    lines += [
        "",
        "## Projection: seconds per request on a GPU (bf16, counted FLOPs and bytes)",
        "",
        f"10 steps per request (PCH: one ~100-token slice and ~2.3 QA pairs, 3 epochs); a step of 100 tokens"
        f" (NPO / GA: the forget example; NPO's reference on 1 step in 3, the cache serving the other epochs) or"
        f" 300 tokens (GradDiff, FIT: plus a 2-item retain batch; reference on every step, the upper bound);"
        f" compute at {MFU:.0%} of the dense bf16 peak, {LAUNCH * 1000:.0f} ms of launches per step, fused AdamW."
        " Not measured: no GPU here.",
        "",
        "| model | mode | "
        + " | ".join(f"{g} s/step 100 tok | {g} s/step 300 tok | {g} s/request" for g, *_ in GPUS)
        + " |",
        "|---|---|" + "---:|---:|---:|" * len(GPUS),
    ]
    for t in TARGETS:
        for mode in ("full", "layers", "lora"):
            cells = []
            for _, fl, bw in GPUS:
                a = gpu_step_seconds(t, mode, 100, 1 / 3, fl, bw)
                b = gpu_step_seconds(t, mode, 300, 1.0, fl, bw)
                cells.append(f"{a:.3f} | {b:.3f} | {10 * a:.1f}-{10 * b:.1f}")
            lines.append(f"| {t.name} | {mode} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", default="cpu")
    ap.add_argument("--cap-gib", type=float, default=9.0, help="kill a measurement past this resident memory")
    ap.add_argument("--only", default="", help="comma-separated substrings: run only matching measurement keys")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per measurement")
    ap.add_argument("--report", action="store_true", help="only rewrite the tables from the json")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(json.loads(args.child))))
        return

    from results_io import RESULTS, write_results

    path = RESULTS / f"memory-{args.name}.json"
    data = json.loads(path.read_text()) if path.exists() else {"measurements": {}}
    data["command"] = "PYTHONPATH=src python benchmarks/memory_bench.py" + (
        f" --name {args.name}" if args.name != "cpu" else ""
    )
    data["machine"] = f"{os.cpu_count()} CPU cores, " + Path("/proc/cpuinfo").read_text().split("model name")[1].split(
        "\n"
    )[0].strip(": \t")
    cap = int(args.cap_gib * GiB)
    if not args.report:
        for spec in plan():
            key = spec["key"]
            if args.only and not any(s in key for s in args.only.split(",")):
                continue
            done = data["measurements"].get(key, {})
            if "peak" in done or "killed" in done.get("skipped", ""):
                continue
            if spec["predicted"] > cap * 0.95:
                data["measurements"][key] = {**spec, "skipped": f"predicted {spec['predicted'] / GiB:.1f} GiB"}
                continue
            t0 = time.time()
            rc, out, seen = watch([sys.executable, __file__, "--child", json.dumps(spec)], cap, args.timeout)
            res = [line[7:] for line in out.splitlines() if line.startswith("RESULT ")]
            if rc == 0 and res:
                data["measurements"][key] = {**json.loads(res[0]), "wall": round(time.time() - t0, 1)}
                r = data["measurements"][key]
                print(
                    f"{key}: peak {r['peak'] / GiB:.2f} GiB (pred {spec['predicted'] / GiB:.2f}), "
                    f"{r['seconds']:.1f}s, wall {r['wall']}s",
                    flush=True,
                )
            else:
                why = "killed at the memory cap or timeout" if rc == -9 else f"exit {rc}"
                data["measurements"][key] = {**spec, "skipped": f"{why}, max RSS seen {seen / GiB:.1f} GiB"}
                print(f"{key}: {why}", flush=True)
            write_results(f"memory-{args.name}", data, report(data))
    write_results(f"memory-{args.name}", data, report(data))


if __name__ == "__main__":
    main()
