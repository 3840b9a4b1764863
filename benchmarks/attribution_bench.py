"""Benchmark: layer-attribution cost, prefix-sharing scorer vs L full skipped forwards (hooks), on the
same requests in one process, alternating which goes first.  Also checks that both give the same scores.
Results: benchmarks/results/attribution-<name>.json and .md.

    python benchmarks/attribution_bench.py --prepared fit_runs/prepared --requests 10
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from results_io import write_results  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prepared", default="fit_runs/prepared")
    ap.add_argument("--name", default="synth")
    ap.add_argument("--requests", type=int, default=10)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    import torch

    from fit_unlearn.models import load_model
    from fit_unlearn.prepare import prepared_data
    from fit_unlearn.strategies.fit.attribution import LayerAttribution, LayerConfig

    model, tok = load_model(Path(args.prepared) / "theta0", device=args.device)
    model.eval()
    docs = prepared_data(Path(args.prepared)).forget[: args.requests + 1]
    scorers = {m: LayerAttribution(LayerConfig(method=m)) for m in ("prefix", "hooks")}
    times: dict[str, list[float]] = {m: [] for m in scorers}
    max_diff = 0.0
    for i, d in enumerate(docs):
        got = {}
        for m in ("prefix", "hooks") if i % 2 == 0 else ("hooks", "prefix"):
            t0 = time.perf_counter()
            got[m] = scorers[m].scores(d.text, model, tok)
            if i:  # the first request warms up
                times[m].append(time.perf_counter() - t0)
        max_diff = max(max_diff, max(abs(a - b) for a, b in zip(got["prefix"], got["hooks"], strict=True)))
    med = {m: statistics.median(v) for m, v in times.items()}
    out = {
        "args": vars(args),
        "threads": torch.get_num_threads(),
        "median_seconds": med,
        "speedup": med["hooks"] / med["prefix"],
        "max_score_difference": max_diff,
        "times": times,
    }
    text = (
        f"Command: `python benchmarks/attribution_bench.py --prepared {args.prepared} --requests {args.requests}` "
        f"({out['threads']} threads)\n\n| scorer | median s/request |\n|---|---|\n"
        f"| hooks (L full forwards) | {med['hooks']:.2f} |\n| prefix | {med['prefix']:.2f} |\n\n"
        f"speed-up {out['speedup']:.2f}x; largest score difference {max_diff:.2e}\n"
    )
    write_results(f"attribution-{args.name}", out, text)
    print(text)


if __name__ == "__main__":
    main()
