"""Benchmark: cost per request of FIT against NPO (and other methods), measured in the same process on
the same requests, interleaved (request i goes to every method before request i+1), so that machine noise
hits all methods alike.  Reports the median wall time per request (plan + update), the ratio to NPO, and
FIT's per-phase medians.  Results: benchmarks/results/cost-<name>.json and .md.

    python benchmarks/cost_bench.py --prepared fit_runs/prepared --requests 12
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from results_io import write_results  # noqa: E402
from stream_bench import METHODS  # noqa: E402  (the same method definitions as the stream benchmark)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prepared", default="fit_runs/prepared")
    ap.add_argument("--name", default="synth")
    ap.add_argument("--methods", default="npo,fit")
    ap.add_argument("--requests", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=1, help="first requests not counted (allocations, caches)")
    ap.add_argument("--lr", type=float, default=3e-5)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    import torch

    from fit_unlearn.engine import Engine
    from fit_unlearn.engine.config import build_config

    methods = args.methods.split(",")
    tmp = Path(tempfile.mkdtemp(prefix="fit-cost-"))
    engines = {}
    for m in methods:
        cfg = build_config(
            {
                "prepared": args.prepared,
                "out": str(tmp / m),
                "device": args.device,
                "stream": {"limit": args.requests},
                "update": {"lr": args.lr},
                "eval": {"every": None, "at_end": False},
                "checkpoint": {"every": 10**6},
                "strategy": METHODS[m]["strategy"],
            }
        )
        engines[m] = Engine(cfg, progress=False)
    requests = [r for _, r in engines[methods[0]].stream()][: args.requests]
    wall: dict[str, list[float]] = {m: [] for m in methods}
    phases: dict[str, dict[str, list[float]]] = {m: {} for m in methods}
    for i, req in enumerate(requests):
        order = methods if i % 2 == 0 else methods[::-1]  # alternate who goes first
        for m in order:
            t0 = time.perf_counter()
            rec = engines[m].submit(req)
            dt = time.perf_counter() - t0
            if i < args.warmup:
                continue
            wall[m].append(dt)
            for k, v in (rec.get("receipt", {}).get("seconds") or {}).items():
                phases[m].setdefault(k, []).append(v)
            phases[m].setdefault("update", []).append(rec.get("seconds", 0.0))
        print(
            f"request {i + 1}/{len(requests)}: " + ", ".join(f"{m} {wall[m][-1]:.1f}s" for m in methods if wall[m]),
            flush=True,
        )
    med = {m: statistics.median(v) for m, v in wall.items()}
    base = med.get("npo")
    out = {
        "args": vars(args),
        "threads": torch.get_num_threads(),
        "requests_counted": len(wall[methods[0]]),
        "median_seconds": med,
        "ratio_to_npo": {m: v / base for m, v in med.items()} if base else None,
        "phase_medians": {m: {k: statistics.median(v) for k, v in p.items()} for m, p in phases.items()},
        "wall": wall,
    }
    lines = [
        f"Command: `python benchmarks/cost_bench.py --prepared {args.prepared} --methods {args.methods} "
        f"--requests {args.requests}` ({out['requests_counted']} requests counted, {out['threads']} threads)",
        "",
        "| method | median s/request | ratio to NPO | phase medians (s) |",
        "|---|---|---|---|",
    ]
    for m in methods:
        ph = ", ".join(f"{k} {v:.2f}" for k, v in out["phase_medians"][m].items())
        ratio = f"{out['ratio_to_npo'][m]:.2f}x" if base else "n/a"
        lines.append(f"| {m} | {med[m]:.2f} | {ratio} | {ph} |")
    write_results(f"cost-{args.name}", out, "\n".join(lines) + "\n")
    print("\n".join(lines))
    for e in engines.values():
        e.close()


if __name__ == "__main__":
    main()
