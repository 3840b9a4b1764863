"""Benchmark: FIT vs baselines on one request stream, evaluated every N requests; a malicious stream;
recovery attacks.  Resumable: each method is a run directory continued with --resume; finished methods
are skipped.  Results: benchmarks/results/<name>.json and a markdown table benchmarks/results/<name>.md.

Measured with the honest protocol (docs/metrics.md): strict F.D. against the retain-only model on the
documents forgotten so far, paper F.D. on the whole forget set, collateral forgetting of the pending
documents, R.U. on retain-eval (never an anchor), T = the prepared forget set's size.  A method name with the
suffix ``-doc`` (e.g. ``fit-doc``) sends requests made of the document alone, without its QA pairs.

    python benchmarks/stream_bench.py --prepared fit_runs/prepared --name synth60
    python benchmarks/stream_bench.py --prepared fit_runs/pch60 --name pch60 --limit 60 --eval-every 20
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# the method table (names, suffixes such as -doc / -noF / -loop) is the library's, shared with `fit-unlearn bench`
from fit_unlearn.bench import METHODS, SUFFIXES, deep_merge, method_spec  # noqa: E402
from fit_unlearn.errors import FitUnlearnError  # noqa: E402
from fit_unlearn.summary import request_seconds  # noqa: E402

__all__ = ["METHODS", "SUFFIXES", "deep_merge", "method_spec"]


def run_method(name: str, spec: dict, args, source: str | None = None, attacks: list[str] | None = None) -> dict:
    from fit_unlearn.engine import Engine
    from fit_unlearn.engine.config import build_config

    out = Path(args.runs) / name
    base = {
        "prepared": args.prepared,
        "out": str(out),
        "seed": args.seed,
        "device": args.device,
        "stream": {"order_seed": args.seed, "limit": args.limit, **({"source": source} if source else {})},
        "update": {"lr": args.lr},
        "eval": {"every": args.eval_every, "attacks": attacks or []},
        "checkpoint": {"every": args.eval_every},
    }
    cfg = build_config(deep_merge(deep_merge(base, spec), json.loads(args.set or "{}")))
    if (out / "results.json").exists() and (out / "DONE").exists():
        res = json.loads((out / "results.json").read_text())
        if any("forget_degree_strict" not in e for e in res["evals"]):
            raise SystemExit(f"{out} holds a run measured under the old protocol; choose another --runs directory")
        changed = cfg.diff(res["config"])  # e.g. `fit` before session 21 was the paper's open-loop recipe
        if changed:
            raise SystemExit(f"{out} was run with other settings ({', '.join(changed)}); choose another --runs")
        return res
    resume = (out / "journal.jsonl").exists()
    t0 = time.perf_counter()
    eng = Engine(cfg, resume=resume, progress=True)
    res = eng.run()
    eng.close()
    res["wall_seconds_this_session"] = time.perf_counter() - t0
    (out / "results.json").write_text(json.dumps(res, indent=1))
    (out / "DONE").write_text("ok")
    return res


EVAL_KEYS = (
    "t",
    "T",
    "forget_degree_strict",
    "forget_degree_strict_paraphrase",
    "forget_degree_paper",
    "collateral_forget",
    "retain_utility",
    "mia_auc_forget_vs_holdout",
)


def summarise(name: str, res: dict) -> dict:
    reqs = res["requests"]
    # the whole cost of a request: planning, the update, and the closed loop's guard (probe and repair)
    per_req = [request_seconds(r) for r in reqs]
    objectives: dict[str, int] = {}
    for r in reqs:
        key = r.get("objective", "none (redundant)")
        objectives[key] = objectives.get(key, 0) + 1
    evals = []
    for e in res["evals"]:
        ref = e.get("reference", {})
        para = e["forget"].get("paraphrase") or {}
        evals.append(
            {k: e.get(k) for k in EVAL_KEYS}
            | {
                "F": e["forget"]["score"],
                "F_gold": (ref.get("forget_strict") or {}).get("retain_only"),
                "F_theta0": (ref.get("forget_strict") or {}).get("theta0"),
                "F_para": para.get("score"),
                "F_para_gold": (ref.get("forget_paraphrase") or {}).get("retain_only"),
                "F_para_theta0": (ref.get("forget_paraphrase") or {}).get("theta0"),
                "F_pending": (e.get("pending") or {}).get("score"),
                "F_pending_theta0": (ref.get("collateral") or {}).get("theta0"),
                "R": e["retain"]["score"],
                "R_ref": (ref.get("retain") or {}).get("at_t"),
                "probe": (e.get("capital_probe") or {}).get("accuracy"),
                "probe_theta0": (e.get("capital_probe") or {}).get("theta0"),
            }
        )
    loops = [r["loop"] for r in reqs if r.get("loop")]
    guards = [r["guard"] for r in reqs if r.get("guard")]
    loop = None
    if loops:
        loop = {
            "reached_target": sum(lp["stopped"] == "target" for lp in loops),
            "requests": len(loops),
            "mean_steps": sum(lp["steps"] for lp in loops) / len(loops),
            "mean_repair_steps": sum(g["repair_steps"] for g in guards) / len(guards) if guards else None,
        }
    return {
        "method": name,
        "requests": len(reqs),
        "loop": loop,
        "seconds_per_request": sum(per_req) / max(1, len(per_req)),
        "objectives": objectives,
        "evals": evals,
        "attacks": res.get("attacks"),
    }


def _f(v, spec: str = ".3f") -> str:
    return "n/a" if v is None else format(v, spec)


def table(rows: list[dict]) -> str:
    """Strict F.D. / R.U. per checkpoint (the headline), then every measured value per method and t."""
    ts = sorted({e["t"] for r in rows for e in r["evals"]})
    head = "| method | s/request | " + " | ".join(f"t={t} strict F.D. / R.U." for t in ts) + " | closed loop |"
    lines = [head, "|" + "---|" * (3 + len(ts))]
    for r in rows:
        by_t = {e["t"]: e for e in r["evals"]}
        cells = []
        for t in ts:
            e = by_t.get(t)
            cells.append("-" if not e else f"{_f(e['forget_degree_strict'])} / {_f(e['retain_utility'])}")
        lp = r.get("loop")
        loop = "off"
        if lp:
            repair = "" if lp["mean_repair_steps"] is None else f", {lp['mean_repair_steps']:.1f} repair steps"
            loop = f"target reached {lp['reached_target']}/{lp['requests']}, {lp['mean_steps']:.1f} steps{repair}"
        lines.append(f"| {r['method']} | {r['seconds_per_request']:.1f} | " + " | ".join(cells) + f" | {loop} |")
    lines += [
        "",
        "| method | t | F (gold, theta0) | F paraphrased (gold, theta0) | strict F.D. (paraphrased) | paper F.D. "
        "| F pending (theta0) | collateral | R (ref) | R.U. | capital probe (theta0) | MIA AUC |",
        "|" + "---|" * 12,
    ]
    for r in rows:
        for e in r["evals"]:
            lines.append(
                f"| {r['method']} | {e['t']}/{e.get('T')} | {_f(e['F'], '.1f')} ({_f(e['F_gold'], '.1f')}, "
                f"{_f(e['F_theta0'], '.1f')}) | {_f(e['F_para'], '.1f')} ({_f(e['F_para_gold'], '.1f')}, "
                f"{_f(e['F_para_theta0'], '.1f')}) | {_f(e['forget_degree_strict'])} "
                f"({_f(e['forget_degree_strict_paraphrase'])}) | {_f(e['forget_degree_paper'])} | "
                f"{_f(e['F_pending'], '.1f')} ({_f(e['F_pending_theta0'], '.1f')}) | {_f(e['collateral_forget'])} | "
                f"{_f(e['R'], '.1f')} ({_f(e['R_ref'], '.1f')}) | {_f(e['retain_utility'])} | "
                f"{_f(e['probe'], '.2f')} ({_f(e['probe_theta0'], '.2f')}) | {_f(e['mia_auc_forget_vs_holdout'])} |"
            )
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
    ap.add_argument("--set", default="", help="JSON merged into every method's config, e.g. '{\"loop\": {}}'")
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
        res = run_method(m, method_spec(m), args, attacks=attacks if m in args.attack_methods.split(",") else [])
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
            res = run_method(f"malicious-{m}", method_spec(m), args, source=str(path))
            rows.append(summarise(f"{m} (malicious {args.malicious})", res))
            _write(results_dir, args, rows)


def _write(results_dir: Path, args, rows) -> None:
    (results_dir / f"{args.name}.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v not in ("", None))
    (results_dir / f"{args.name}.md").write_text(
        f"Command: `python benchmarks/stream_bench.py {flags}`\n\n"
        + table(rows)
        + "\n"
        + (f"\nRecovery attacks (forget score):\n\n{attacks}\n" if (attacks := attack_table(rows)) else "")
    )
    print(table(rows), flush=True)


if __name__ == "__main__":
    try:
        main()
    except FitUnlearnError as e:  # an unknown method name, a bad --set: one line, as before
        raise SystemExit(str(e)) from None
