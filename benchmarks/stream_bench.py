"""Benchmark: FIT vs baselines on one request stream, evaluated every N requests; a malicious stream;
recovery attacks.  Resumable: each method is a run directory continued with --resume; finished methods
are skipped.  Results: benchmarks/results/<name>.json and a markdown table benchmarks/results/<name>.md.

    python benchmarks/stream_bench.py --prepared fit_runs/prepared --name synth60
    python benchmarks/stream_bench.py --prepared fit_runs/pch40 --name pch40 --limit 40 --eval-every 20
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

METHODS = {
    "ga": {"strategy": {"name": "sequential", "objective": "ga"}},
    "graddiff": {"strategy": {"name": "sequential", "objective": "graddiff"}},
    "npo": {"strategy": {"name": "sequential", "objective": "npo"}},
    "fit": {"strategy": {"name": "fit", "fit": {"importance": {"calibrate": True, "calibration_size": 10}}}},
    # extension: layers ranked relative to their retain profile (see docs/fit.md)
    "fit-relative": {
        "strategy": {
            "name": "fit",
            "fit": {"importance": {"calibrate": True, "calibration_size": 10}, "layers": {"relative": True}},
        }
    },
    # variant: every importance bucket keeps a retain CE anchor (NPO-RT / RL + CE(retain)) instead of KL
    "fit-rt": {
        "strategy": {
            "name": "fit",
            "fit": {
                "importance": {
                    "calibrate": True,
                    "calibration_size": 10,
                    "objectives": ["npo_rt", "npo_rt", "rl"],
                    "objective_params": {"rl": {"retain_weight": 1.0}},
                }
            },
        }
    },
}


def run_method(name: str, spec: dict, args, source: str | None = None, attacks: list[str] | None = None) -> dict:
    from fit_unlearn.engine import Engine
    from fit_unlearn.engine.config import build_config

    out = Path(args.runs) / name
    if (out / "results.json").exists() and (out / "DONE").exists():
        return json.loads((out / "results.json").read_text())
    cfg = build_config(
        {
            "prepared": args.prepared,
            "out": str(out),
            "seed": args.seed,
            "device": args.device,
            "stream": {"order_seed": args.seed, "limit": args.limit, **({"source": source} if source else {})},
            "update": {"lr": args.lr},
            "eval": {"every": args.eval_every, "attacks": attacks or []},
            "checkpoint": {"every": args.eval_every},
            **spec,
        }
    )
    resume = (out / "journal.jsonl").exists()
    t0 = time.perf_counter()
    eng = Engine(cfg, resume=resume, progress=True)
    res = eng.run()
    eng.close()
    res["wall_seconds_this_session"] = time.perf_counter() - t0
    (out / "results.json").write_text(json.dumps(res, indent=1))
    (out / "DONE").write_text("ok")
    return res


def summarise(name: str, res: dict) -> dict:
    reqs = res["requests"]
    per_req = [r.get("seconds", 0.0) + r.get("seconds_plan", 0.0) for r in reqs]
    objectives: dict[str, int] = {}
    for r in reqs:
        key = r.get("objective", "none (redundant)")
        objectives[key] = objectives.get(key, 0) + 1
    return {
        "method": name,
        "requests": len(reqs),
        "seconds_per_request": sum(per_req) / max(1, len(per_req)),
        "objectives": objectives,
        "evals": [
            {k: e.get(k) for k in ("t", "forget_degree", "retain_utility", "mia_auc_forget_vs_holdout")}
            | {"F": e["forget"]["score"], "R": e["retain"]["score"]}
            for e in res["evals"]
        ],
        "attacks": res.get("attacks"),
    }


def table(rows: list[dict]) -> str:
    ts = sorted({e["t"] for r in rows for e in r["evals"]})
    head = "| method | s/request | " + " | ".join(f"t={t} F.D. / R.U." for t in ts) + " |"
    lines = [head, "|" + "---|" * (2 + len(ts))]
    for r in rows:
        by_t = {e["t"]: e for e in r["evals"]}
        cells = []
        for t in ts:
            e = by_t.get(t)
            fd = "n/a" if not e or e["forget_degree"] is None else f"{e['forget_degree']:.3f}"
            cells.append("-" if not e else f"{fd} / {e['retain_utility']:.3f}")
        lines.append(f"| {r['method']} | {r['seconds_per_request']:.1f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def attack_table(rows: list[dict]) -> str:
    lines = [
        "| method | F unlearned | F int8 | F int4 | recovery int8 | recovery int4 | relearn F before -> after "
        "(theta0) | relearn recovery |",
        "|---|---|---|---|---|---|---|---|",
    ]
    fmt = lambda v, s=".3f": "n/a" if v is None else format(v, s)  # noqa: E731
    for r in rows:
        a = r.get("attacks") or {}
        q, rl = a.get("quantize"), a.get("relearn")
        if not q and not rl:
            continue
        u = (q or {}).get("models", {}).get("unlearned", {})
        cells = [
            fmt(u.get("fp", {}).get("forget_score"), ".2f"),
            fmt(u.get("int8", {}).get("forget_score"), ".2f"),
            fmt(u.get("int4", {}).get("forget_score"), ".2f"),
            fmt((q or {}).get("recovery", {}).get("int8")),
            fmt((q or {}).get("recovery", {}).get("int4")),
        ]
        if rl:
            cells += [
                f"{rl['before']['forget_score']:.2f} -> {rl['after']['forget_score']:.2f} "
                f"({fmt(rl['held_out_forget_theta0'], '.2f')})",
                fmt(rl["recovery"]),
            ]
        else:
            cells += ["-", "-"]
        lines.append(f"| {r['method']} | " + " | ".join(cells) + " |")
        if q:
            for ref in ("theta0", "retain_only"):
                m = q["models"].get(ref, {})
                lines.append(
                    f"| ({ref}) | {fmt(m.get('fp', {}).get('forget_score'), '.2f')} | "
                    f"{fmt(m.get('int8', {}).get('forget_score'), '.2f')} | "
                    f"{fmt(m.get('int4', {}).get('forget_score'), '.2f')} | | | | |"
                )
    return "\n".join(lines) if len(lines) > 2 else ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prepared", default="fit_runs/prepared")
    ap.add_argument("--name", default="synth60")
    ap.add_argument("--runs", default=None, help="run directories (default fit_runs/bench-<name>)")
    ap.add_argument("--methods", default="npo,ga,graddiff,fit")
    ap.add_argument("--limit", type=int, default=60)
    ap.add_argument("--eval-every", type=int, default=20)
    ap.add_argument("--lr", type=float, default=3e-5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--malicious", default="", help="kind of malicious stream to run for FIT and GA (e.g. mixed)")
    ap.add_argument("--malicious-methods", default="ga,fit", help="methods run on the malicious stream")
    ap.add_argument("--attacks", default="", help="attacks at the end of each run, e.g. quantize8,quantize4,relearn")
    ap.add_argument("--attack-methods", default="ga,npo,fit", help="methods whose runs are attacked")
    args = ap.parse_args()
    args.runs = args.runs or f"fit_runs/bench-{args.name}"
    results_dir = Path(__file__).parent / "results"
    results_dir.mkdir(exist_ok=True)
    attacks = [a for a in args.attacks.split(",") if a]
    rows = []
    for m in args.methods.split(","):
        res = run_method(m, METHODS[m], args, attacks=attacks if m in args.attack_methods.split(",") else [])
        rows.append(summarise(m, res))
        _write(results_dir, args, rows)
    if args.malicious:
        from fit_unlearn.data.documents import write_jsonl
        from fit_unlearn.data.malicious import malicious_requests
        from fit_unlearn.prepare import prepared_data

        path = Path(args.runs) / f"malicious-{args.malicious}.jsonl"
        write_jsonl(
            malicious_requests(prepared_data(Path(args.prepared)).forget, args.malicious, args.limit, args.seed), path
        )
        for m in args.malicious_methods.split(","):
            res = run_method(f"malicious-{m}", METHODS[m], args, source=str(path))
            rows.append(summarise(f"{m} (malicious {args.malicious})", res))
            _write(results_dir, args, rows)


def _write(results_dir: Path, args, rows) -> None:
    (results_dir / f"{args.name}.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v not in ("", None))
    (results_dir / f"{args.name}.md").write_text(
        f"Command: `python benchmarks/stream_bench.py {flags}`\n\n" + table(rows) + "\n"
    )
    print(table(rows), flush=True)


if __name__ == "__main__":
    main()
