"""Replay a closed-loop run's measured losses under other check schedules and stall windows.

A run journaled with ``loop.measured`` (session 23 on) lists each request's loss at every check.  From a run that
checked every ``check_every`` steps (``loop.check_ahead`` and ``loop.stall_steps`` off), this replays where each
request would have stopped with ``check_ahead`` and a stall window, using the engine's own ``next_check`` and
``stalled`` and the loss between two measures read off a straight line.  Checks change no weight, so the replayed
stop is exact wherever it falls on a measured step; past a request's recorded stop nothing is known, so a request
stops there at the latest (where it reached its target, or spent the budget).

    python benchmarks/check_schedule_replay.py fit_runs/s23-base20/runs/fit-s0 \
        --settings "none,none,0.03;0.5,none,0.03;none,6,0.03;0.5,6,0.03;0.5,8,0.05"

Each setting is ``check_ahead,stall_steps,stall_rise``; the table gives mean steps and checks per request, the
requests that reached their target in the run but would not have, and the mean loss given up at the stop.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from fit_unlearn.engine.update import StopRule, next_check, stalled


def replay(record: dict, check_every: int, ahead, window, rise) -> tuple[int, int, float]:
    """(steps, checks, loss at the stop) of one request replayed under the setting."""
    lp = record["loop"]
    xs, ys = zip(*lp["measured"], strict=True)
    stop = StopRule(lp["target"], xs[-1], check_every, check_ahead=ahead, stall_steps=window, stall_rise=rise)
    measured, due = [[0, ys[0]]], check_every
    while True:
        s = min(due, xs[-1])  # the run's last measure: the target reached there, or the budget's end
        loss = float(np.interp(s, xs, ys))
        measured.append([s, loss])
        if loss >= lp["target"] or s >= xs[-1] or stalled(stop, measured):
            return s, len(measured) - 1, loss
        due = next_check(stop, s, loss, *measured[-2])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path, help="a run directory (its journal.jsonl)")
    ap.add_argument("--settings", default="none,none,0.03;0.5,none,0.03;none,6,0.03;0.5,6,0.03")
    ap.add_argument("--check-every", type=int, default=2)
    args = ap.parse_args()
    events = [json.loads(line) for line in (args.run / "journal.jsonl").read_text().splitlines() if line.strip()]
    records = [e["record"] for e in events if e["event"] == "applied" and "measured" in e["record"].get("loop", {})]
    if not records:
        raise SystemExit(f"{args.run}: no request lists loop.measured (run it with session 23's code or later)")
    print(f"{len(records)} requests; recorded: {np.mean([r['steps'] for r in records]):.2f} steps per request")
    print("| check_ahead | stall_steps | stall_rise | steps | checks | reached in the run, not here | loss given up |")
    print("|---|---|---|---|---|---|---|")
    for setting in args.settings.split(";"):
        a, w, r = (None if v.strip() == "none" else v.strip() for v in setting.split(","))
        ahead, window, rise = (float(a) if a else None), (int(w) if w else None), float(r or 0.03)
        out = [replay(rec, args.check_every, ahead, window, rise) for rec in records]
        cut = sum(
            rec["loop"]["stopped"] == "target" and loss < rec["loop"]["target"]
            for rec, (_, _, loss) in zip(records, out, strict=True)
        )
        given_up = np.mean([rec["loop"]["loss_after"] - loss for rec, (_, _, loss) in zip(records, out, strict=True)])
        print(
            f"| {a or 'null'} | {w or 'null'} | {rise} | {np.mean([s for s, _, _ in out]):.2f} | "
            f"{np.mean([c for _, c, _ in out]):.2f} | {cut} | {given_up:.3f} |"
        )


if __name__ == "__main__":
    main()
