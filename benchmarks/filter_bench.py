"""Benchmark: what the redundancy filter (FIT's F) removes, per chunk unit, on a malicious stream and on
the legitimate forget stream.

The filter runs alone on theta_0 (no unlearning updates between requests), committing the kept chunks of
each request to its memory as FIT does, so the kept fraction measures the filter and nothing else.  A
good filter drops much of a near-duplicate / overlapping stream and almost nothing of distinct documents.
Results: benchmarks/results/filter-<name>.json and .md.

    python benchmarks/filter_bench.py --prepared fit_runs/prepared --requests 30
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from results_io import write_results  # noqa: E402

UNITS = {"chars8": ("chars", 8), "tokens16": ("tokens", 16), "sentences1": ("sentences", 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prepared", default="fit_runs/prepared")
    ap.add_argument("--name", default="synth")
    ap.add_argument("--requests", type=int, default=30, help="requests per stream")
    ap.add_argument("--units", default=",".join(UNITS), help=f"chunkings to compare: {', '.join(UNITS)}")
    ap.add_argument("--malicious", default="mixed")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    from fit_unlearn.data.malicious import malicious_requests
    from fit_unlearn.models import load_model
    from fit_unlearn.prepare import prepared_data
    from fit_unlearn.strategies.fit.filter import FilterConfig, RedundancyFilter

    model, tok = load_model(Path(args.prepared) / "theta0", device=args.device)
    model.eval()
    data = prepared_data(Path(args.prepared))
    streams = {
        "legitimate": data.forget[: args.requests],
        f"malicious-{args.malicious}": malicious_requests(data.forget, args.malicious, args.requests, args.seed),
    }
    rows, out = [], {"args": vars(args), "results": {}}
    for unit_name in args.units.split(","):
        unit, size = UNITS[unit_name]
        for sname, docs in streams.items():
            filt = RedundancyFilter(FilterConfig(unit=unit, size=size), device=args.device)
            kept, cand, per_kind, t0 = [], [], {}, time.perf_counter()
            for i, d in enumerate(docs):
                _, receipt = filt.filter(d.text, model, tok)
                filt.commit()
                kept.append(receipt["kept_fraction"])
                cand.append(receipt["candidates"] / max(1, receipt["chunks"]))
                kind = "distinct" if sname == "legitimate" else _kind(args.malicious, i)
                per_kind.setdefault(kind, []).append(receipt["kept_fraction"])
            sec = (time.perf_counter() - t0) / len(docs)
            res = {
                "mean_kept": statistics.mean(kept[1:]) if len(kept) > 1 else 1.0,
                # chunks with s* >= tau: removal candidates, kept anyway when dropping them moves the loss > eps
                "mean_candidates": statistics.mean(cand[1:]) if len(cand) > 1 else 0.0,
                "fully_redundant": sum(k == 0 for k in kept),
                "by_kind": {k: statistics.mean(v) for k, v in per_kind.items()},
                "seconds_per_request": sec,
                "kept": kept,
            }
            out["results"][f"{unit_name}/{sname}"] = res
            rows.append((unit_name, sname, res))
            print(unit_name, sname, f"candidates {res['mean_candidates']:.3f} kept {res['mean_kept']:.3f}", flush=True)
    lines = [
        f"Command: `python benchmarks/filter_bench.py --prepared {args.prepared} --requests {args.requests} "
        f"--malicious {args.malicious}` (filter alone on theta_0; mean kept fraction over requests 2..N)",
        "",
        "| chunking | stream | candidates (s* >= tau) | mean kept | fully redundant | kept by kind | s/request |",
        "|---|---|---|---|---|---|---|",
    ]
    for unit_name, sname, r in rows:
        kinds = ", ".join(f"{k} {v:.2f}" for k, v in r["by_kind"].items())
        lines.append(
            f"| {unit_name} | {sname} | {r['mean_candidates']:.3f} | {r['mean_kept']:.3f} | {r['fully_redundant']} | "
            f"{kinds} | "
            f"{r['seconds_per_request']:.2f} |"
        )
    write_results(f"filter-{args.name}", out, "\n".join(lines) + "\n")
    print("\n".join(lines))


def _kind(kind: str, i: int) -> str:
    """Which generator made malicious request i ('mixed' interleaves them in this order)."""
    return ("near_duplicate", "overlap", "common_tokens")[i % 3] if kind == "mixed" else kind


if __name__ == "__main__":
    main()
