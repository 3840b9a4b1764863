"""Crash battery: a request stream killed with SIGKILL at random moments (during updates, evaluations and
checkpoint writing alike) and resumed each time, until it finishes.  It must end with every request applied
exactly once, every evaluation present, and final results equal to an uninterrupted run's with the same
seed (F.D./R.U. within 1e-6, weights bit for bit).  Each kill is classified by what the run was doing:

* ``checkpoint``: a temporary checkpoint directory existed (the weights were being written);
* ``evaluation``: the last journal event was a checkpoint at an evaluation step, not yet evaluated;
* ``update``: anything else after start-up (planning, training, journaling);
* ``start-up``: the journal did not grow since the process started (loading, validation, replay).

    python benchmarks/crash_resume.py --config examples/fit.yaml --name fit --kills 20 --targeted 3
    python benchmarks/crash_resume.py --config examples/graddiff.yaml --name graddiff --kills 20 --targeted 3

Random kills rarely land inside the short windows, so ``--targeted K`` adds K kills aimed at each: the
process is killed as soon as a temporary checkpoint directory appears (inside checkpoint writing), and as
soon as a checkpoint at an evaluation step is journaled (inside the evaluation that follows).

Writes benchmarks/results/crash_resume-<name>.json (and prints it).
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
        "--config",
        args.config,
        "--prepared",
        args.prepared,
        "--out",
        str(out),
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


def journal(run: Path) -> list[dict]:
    p = run / "journal.jsonl"
    if not p.exists():
        return []
    out = []
    for line in p.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # a torn last line
            pass
    return out


def temp_dirs(run: Path) -> set[str]:
    return {p.name for p in (run / "checkpoints").glob(".ckpt-*")}


def moment(run: Path, before: int, eval_every: int, stale: set[str] = frozenset()) -> str:
    """What the killed process was doing (see the module docstring).  ``stale``: temporary checkpoint
    directories an earlier kill left behind (the next checkpoint removes them): they say nothing."""
    if temp_dirs(run) - stale:
        return "checkpoint"
    events = journal(run)
    ck = next((i for i in range(len(events) - 1, -1, -1) if events[i]["event"] == "checkpoint"), None)
    if ck is not None and events[ck].get("t") and events[ck]["t"] % eval_every == 0:
        t = events[ck]["t"]
        evaluated = any(e["event"] == "eval" and e["t"] == t for e in events)
        received = any(e["event"] == "received" for e in events[ck + 1 :])
        if not evaluated and not received and len(events) > before:
            return "evaluation"  # the evaluation after that checkpoint, or its redo after a resume
    if len(events) <= before:
        return "start-up"
    return "update"


def aimed(run: Path, kind: str, before: int, eval_every: int, stale: set[str]) -> bool:
    """True at the moment a targeted kill of ``kind`` should strike."""
    if kind == "checkpoint":
        return bool(temp_dirs(run) - stale)
    events = journal(run)[before:]
    return bool(events) and moment(run, before, eval_every, stale) == "evaluation"


def weights_hash(run: Path) -> str:
    res = json.loads((run / "results.json").read_text())
    h = hashlib.sha256()
    for f in sorted(Path(res["final_model"]).glob("*.safetensors")):
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def summary(run: Path) -> dict:
    res = json.loads((run / "results.json").read_text())
    counts = res["applied_counts"]
    return {
        "evals": [
            {"t": e["t"], "forget_degree_strict": e["forget_degree_strict"], "retain_utility": e["retain_utility"]}
            for e in res["evals"]
        ],
        "F": res["evals"][-1]["forget"]["score"],
        "R": res["evals"][-1]["retain"]["score"],
        "applied": len(counts),
        "max_applications": max(counts.values()),
        "min_applications": min(counts.values()),
        "weights": weights_hash(run),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="examples/fit.yaml")
    ap.add_argument("--name", default=None, help="results name (default: the config's stem)")
    ap.add_argument("--prepared", default="fit_runs/prepared")
    ap.add_argument("--limit", type=int, default=12)
    ap.add_argument("--eval-every", type=int, default=6)
    ap.add_argument("--checkpoint-every", type=int, default=3)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--targeted", type=int, default=3, help="extra kills aimed at each short window")
    ap.add_argument("--min-wait", type=float, default=4)
    ap.add_argument("--max-wait", type=float, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--runs", default="fit_runs/crash")
    args = ap.parse_args()
    name = args.name or Path(args.config).stem
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    root = Path(args.runs) / name
    full, crash = root / "uninterrupted", root / "crashed"
    rng = random.Random(args.seed)
    t0 = time.time()
    if not (full / "results.json").exists():
        subprocess.run(cmd(args, full, (full / "journal.jsonl").exists()), env=env, check=True)

    def start() -> tuple[subprocess.Popen, int, set[str]]:
        """Start (or resume) the crashed run; returns it with what the run directory held before it."""
        before, stale = len(journal(crash)), temp_dirs(crash)
        p = subprocess.Popen(
            cmd(args, crash, (crash / "journal.jsonl").exists()),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return p, before, stale

    kills = []
    while len(kills) < args.kills:
        p, before, stale = start()
        wait = rng.uniform(args.min_wait, args.max_wait)
        try:
            p.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGKILL)
            p.wait()
            kills.append({"after_s": round(wait, 1), "moment": moment(crash, before, args.eval_every, stale)})
            print(f"kill {len(kills)}: {kills[-1]}", flush=True)
            continue
        if p.returncode != 0:
            raise SystemExit(f"the run failed with exit code {p.returncode} (not a kill): see {crash}")
        print("finished before the next kill; starting over to reach the number of kills", flush=True)
        kills.append({"after_s": round(wait, 1), "moment": "finished (no kill)"})
        break
    plan = [k for k in ("checkpoint", "evaluation") for _ in range(args.targeted)]
    while plan and not (crash / "results.json").exists():
        kind = plan[0]
        p, before, stale = start()
        while p.poll() is None and not aimed(crash, kind, before, args.eval_every, stale):
            time.sleep(0.02)
        if p.poll() is not None:  # the run ended before the window opened
            break
        p.send_signal(signal.SIGKILL)
        p.wait()
        kills.append({"after_s": None, "moment": moment(crash, before, args.eval_every, stale), "aimed_at": kind})
        print(f"kill {len(kills)}: {kills[-1]}", flush=True)
        plan.pop(0)
    if not (crash / "results.json").exists():  # written last, once the run has ended
        subprocess.run(cmd(args, crash, True), env=env, check=True)
    events = journal(crash)
    a, b = summary(full), summary(crash)
    diffs = [
        max(abs(x[k] - y[k]) for k in ("forget_degree_strict", "retain_utility"))
        for x, y in zip(a["evals"], b["evals"], strict=False)
    ]
    report = {
        "command": " ".join(sys.argv),
        "args": vars(args),
        "kills": kills,
        "kills_by_moment": {m: sum(k["moment"] == m for k in kills) for m in sorted({k["moment"] for k in kills})},
        "uninterrupted": a,
        "crashed_and_resumed": b,
        "same_evaluation_steps": [e["t"] for e in a["evals"]] == [e["t"] for e in b["evals"]],
        "max_abs_diff_fd_ru": max(diffs) if diffs else None,
        "identical_weights": a["weights"] == b["weights"],
        "exactly_once": b["min_applications"] == b["max_applications"] == 1 and b["applied"] == a["applied"],
        "rolled_back_events": sum(e["event"] == "rolled_back" for e in events),
        "resume_events": sum(e["event"] == "resume" for e in events),
        "seconds": round(time.time() - t0),
    }
    out = Path(__file__).parent / "results" / f"crash_resume-{name}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
