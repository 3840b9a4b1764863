"""What keeping one LoRA adapter per request costs as the stream grows (``update.lora.mode: stack``).

Adds k rank-r adapters (random A and B, every linear layer of every decoder block, as the engine's
``-lora-stack`` methods do) to the default model and times a forward pass of one 256-token sequence, an
evaluation-sized forward, after each step of k, next to the merged model's forward (k adapters merged cost
nothing at inference).  Also: resident memory and the adapters' bytes.  One process, sequential.

    python benchmarks/stack_cost.py --ks 0,1,10,30,100,300 --name default
Writes benchmarks/results/stack_cost-<name>.{json,md} as it goes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from fit_unlearn.engine.adapters import Adapters, LoraSection  # noqa: E402
from fit_unlearn.models import load_model  # noqa: E402


def _rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


@torch.no_grad()
def _forward_seconds(model, x, repeats: int) -> float:
    model(input_ids=x)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        model(input_ids=x)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--ks", default="0,1,10,30,100,300")
    ap.add_argument("--r", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--name", default="default")
    args = ap.parse_args()
    torch.manual_seed(0)
    model, _ = load_model(args.model)
    x = torch.randint(0, model.config.vocab_size, (1, args.tokens))
    ad = Adapters(model, LoraSection(r=args.r, alpha=2 * args.r, mode="stack"))
    res_dir = Path(__file__).parent / "results"
    rows, t_plain = [], _forward_seconds(model, x, args.repeats)
    made = 0
    t_start = time.perf_counter()
    for k in sorted(int(v) for v in args.ks.split(",")):
        while made < k:
            name = f"req{made:06d}"
            for p in ad.attach(name, "all"):
                p.data.normal_(0, 0.01)  # B is zero at attach: make every adapter do real work
            ad.finish(name)
            made += 1
        sec = _forward_seconds(model, x, args.repeats) if k else t_plain
        n_params = sum(p.numel() for n, p in model.named_parameters() if ".lora_" in n)
        rows.append(
            {
                "adapters": k,
                "forward_s": round(sec, 4),
                "x_merged": round(sec / t_plain, 2),
                "adapter_params": n_params,
                "adapter_mib": round(n_params * 4 / 2**20, 1),
                "peak_rss_gib": round(_rss_gib(), 2),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
        out = {
            "command": "python benchmarks/stack_cost.py " + " ".join(f"--{k} {v}" for k, v in vars(args).items()),
            "tokens": args.tokens,
            "r": args.r,
            "merged_forward_s": round(t_plain, 4),
            "rows": rows,
            "seconds": round(time.perf_counter() - t_start, 1),
        }
        (res_dir / f"stack_cost-{args.name}.json").write_text(json.dumps(out, indent=1))
        lines = [
            f"Command: `{out['command']}`",
            "",
            f"Forward of one {args.tokens}-token sequence (best of {args.repeats}), rank-{args.r} adapters on every "
            f"block linear; merged model: {t_plain:.3f} s.",
            "",
            "| adapters kept | forward s | x merged | adapter params | adapter MiB (fp32) | peak RSS GiB |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['adapters']} | {r['forward_s']} | {r['x_merged']} | {r['adapter_params']:,} | {r['adapter_mib']} | "
            f"{r['peak_rss_gib']} |"
            for r in rows
        ]
        (res_dir / f"stack_cost-{args.name}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
