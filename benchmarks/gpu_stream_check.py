"""GPU check: whole streams through the engine on CUDA (journal, checkpoints, closed loop, evaluation with
generation, an int4 attack), on a tiny model prepared from a config there (nothing downloaded, nothing carried
but the code), in fp32 and bf16.  Writes one JSON line per run: the method, dtype, seconds, the evaluation's
strict F.D. / R.U., the requests applied, the evaluations and checkpoints the journal holds and the attacks run.

    python benchmarks/gpu_stream_check.py --out DIR [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TINY = {
    "update": {"lr": 1e-3, "epochs": 1, "retain_batch_size": 1},
    "eval": {"batch_size": 8, "quantize_method": "rtn"},
}


def main() -> None:
    from fit_unlearn.bench import BenchConfig, run_bench
    from fit_unlearn.data.synth import SynthConfig, synthesize
    from fit_unlearn.engine import Journal
    from fit_unlearn.models import build_tiny_llama, save_model, train_tokenizer
    from fit_unlearn.prepare import PrepareConfig, prepare
    from fit_unlearn.training import FinetuneConfig

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()
    out = Path(args.out)
    data = synthesize(SynthConfig(n_forget=8, n_retain=6, n_holdout=4, seed=1))
    texts = [d.text for d in data.forget + data.retain + data.holdout]
    texts += [f"Question: {q.question}\nAnswer: {q.answer}" for d in data.forget + data.retain for q in d.qa]
    tok = train_tokenizer(texts, vocab_size=400)
    model_dir = save_model(build_tiny_llama(tok, layers=3, hidden=64, heads=4, seed=0, tied=True), tok, out / "tiny")
    t0 = time.perf_counter()
    prep = out / "prepared"
    cfg = PrepareConfig(
        model=str(model_dir), recipe=FinetuneConfig(lr=1e-2, epochs=40, batch_size=4), probe_n=4, device=args.device
    )
    prepare(data, prep, cfg, progress=False)
    print(json.dumps({"prepared_s": time.perf_counter() - t0}), flush=True)
    for dtype in ("fp32", "bf16"):
        bench = out / f"bench-{dtype}"
        t0 = time.perf_counter()
        bcfg = BenchConfig(
            prepared=prep,
            methods=("fit-noF", "npo", "ga-rows-loop", "fit-noF-lora-stack"),  # F needs the encoder package
            seeds=(0,),
            requests=4,
            eval_every=2,
            attacks=("quantize4",),
            overrides=TINY,
            device=args.device,
            dtype=dtype,
        )
        run_bench(bcfg, bench, command="benchmarks/gpu_stream_check.py", progress=False)
        for run in sorted((bench / "runs").iterdir()):
            res = json.loads((run / "results.json").read_text())
            ev = res["evals"][-1]
            events = [e["event"] for e in Journal(run / "journal.jsonl", writer=False).events]
            row = {
                "run": run.name,
                "dtype": dtype,
                "applied": sum(res["applied_counts"].values()),
                "strict_fd": ev.get("forget_degree_strict"),
                "ru": ev.get("retain_utility"),
                "evals": len(res["evals"]),
                "checkpoints": events.count("checkpoint"),
                "attacks": list(res.get("attacks") or {}),
            }
            print(json.dumps(row), flush=True)
        print(json.dumps({"dtype": dtype, "bench_s": time.perf_counter() - t0}), flush=True)


if __name__ == "__main__":
    main()
