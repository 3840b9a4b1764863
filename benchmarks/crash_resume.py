"""Crash test: a request stream killed with SIGKILL at random moments and resumed until done must end
with every request applied exactly once and the same final F.D./R.U. (and weights) as an uninterrupted
run with the same seed.  Writes benchmarks/results/crash_resume-<objective>.json.

    python benchmarks/crash_resume.py --prepared fit_runs/prepared --objective ga --limit 60 --kills 4
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path


def cmd(args, out: Path, resume: bool) -> list[str]:
    c = [
        sys.executable,
        "-m",
        "fit_unlearn.cli",
        "run",
        "--prepared",
        args.prepared,
        "--out",
        str(out),
        "--objective",
        args.objective,
        "--limit",
        str(args.limit),
        "--eval-every",
        str(args.eval_every),
        "--checkpoint-every",
        str(args.checkpoint_every),
        "--seed",
        str(args.seed),
    ]
    return c + (["--resume"] if resume else [])


def weights_hash(run: Path) -> str:
    res = json.loads((run / "results.json").read_text())
    h = hashlib.sha256()
    for f in sorted(Path(res["final_model"]).glob("*.safetensors")):
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def final(run: Path) -> dict:
    res = json.loads((run / "results.json").read_text())
    e = res["evals"][-1]
    counts = res["applied_counts"]
    return {
        "t": e["t"],
        "forget_degree_strict": e["forget_degree_strict"],
        "retain_utility": e["retain_utility"],
        "F": e["forget"]["score"],
        "R": e["retain"]["score"],
        "applied": len(counts),
        "max_applications": max(counts.values()),
        "min_applications": min(counts.values()),
        "weights": weights_hash(run),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prepared", default="fit_runs/prepared")
    ap.add_argument("--objective", default="ga")
    ap.add_argument("--limit", type=int, default=60)
    ap.add_argument("--eval-every", type=int, default=20)
    ap.add_argument("--checkpoint-every", type=int, default=5)
    ap.add_argument("--kills", type=int, default=4)
    ap.add_argument("--min-wait", type=float, default=20)
    ap.add_argument("--max-wait", type=float, default=120)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--runs", default="fit_runs/crash")
    args = ap.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    root = Path(args.runs) / args.objective
    full, crash = root / "uninterrupted", root / "crashed"
    rng = random.Random(args.seed)
    t0 = time.time()
    if not (full / "results.json").exists():
        subprocess.run(cmd(args, full, (full / "journal.jsonl").exists()), env=env, check=True)
    kills = []
    for _ in range(args.kills):
        p = subprocess.Popen(
            cmd(args, crash, (crash / "journal.jsonl").exists()),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait = rng.uniform(args.min_wait, args.max_wait)
        try:
            p.wait(timeout=wait)
            kills.append({"after_s": wait, "killed": False, "rc": p.returncode})
            break  # finished before the kill
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGKILL)
            p.wait()
            kills.append({"after_s": round(wait, 1), "killed": True})
    subprocess.run(cmd(args, crash, (crash / "journal.jsonl").exists()), env=env, check=True)
    journal = [json.loads(x) for x in (crash / "journal.jsonl").read_text().splitlines()]
    a, b = final(full), final(crash)
    report = {
        "args": vars(args),
        "kills": kills,
        "uninterrupted": a,
        "crashed_and_resumed": b,
        "rolled_back_events": sum(e["event"] == "rolled_back" for e in journal),
        "resume_events": sum(e["event"] == "resume" for e in journal),
        "abs_diff_forget_degree_strict": abs(a["forget_degree_strict"] - b["forget_degree_strict"]),
        "abs_diff_retain_utility": abs(a["retain_utility"] - b["retain_utility"]),
        "identical_weights": a["weights"] == b["weights"],
        "seconds": time.time() - t0,
    }
    out = Path(__file__).parent / "results" / f"crash_resume-{args.objective}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
