"""Where the closed loop's stop lands, per kind of document: for each ``domain`` of the forget set (PCH: personal,
harmful, code, paper), theta_0's losses on the holdout documents of that kind, and for the requests of a run
forgotten by an evaluation: how many spent the step budget, their stop targets and losses after, and their
per-document forget score against the retain-only model's (the evaluation's ``per_document``) and the mean absolute
gap between the two, document by document (each kind's and over every document); then the three
components of the forget score F = 100 cbrt(p r a) (answer probability, ROUGE-L of the generated answer, token
accuracy on the document), each kind's share of the set's mean, against the retain-only model's.  Strict F.D. reads
F of the set alone, so an answer probability below the retain-only model's can hide a ROUGE-L and a token accuracy
above it.  Each document's answer probability and ROUGE-L are the mean over its questions; the evaluation averages
over all questions, so on a set with several questions per document the set's figures differ a little from F's.

Reads a run's journal and evaluation files and the prepared split; runs no model.

    python benchmarks/by_kind.py --run fit_runs/s24-synth60-reuse4m1/runs/fit-s0 --prepared fit_runs/prepared --t 60

Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

from fit_unlearn.evaluation import Reference


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def by_kind(run: Path, prepared: Path, t: int) -> str:
    data = prepared / "data"
    holdout, forget = _jsonl(data / "holdout.jsonl"), {d["id"]: d for d in _jsonl(data / "forget.jsonl")}
    events = _jsonl(run / "journal.jsonl")
    level = next(e for e in events if e["event"] == "loop_calibrated")["level"]
    held = defaultdict(list)
    for d, loss in zip(holdout, level["losses"], strict=True):
        held[d.get("domain")].append(loss)
    records = {e["id"]: e["record"] for e in events if e["event"] == "applied"}
    ev = json.loads((run / "evals" / f"eval-t{t:05d}.json").read_text())
    rows = defaultdict(lambda: defaultdict(list))
    for doc in ev["per_document"]:
        loop = records[doc["id"]]["loop"]
        row = rows[forget[doc["id"]].get("domain")]
        row["budget"].append(loop["stopped"] == "budget")
        row["target"].append(loop["target"])
        row["after"].append(loop["loss_after"])
        row["score"].append(doc["score"])
        row["gold"].append(doc["retain_only"])
    out = [
        f"Run `{run}`, t = {t} (one global target {level['target']:.2f} unless `loop.neighbours`)",
        "",
        "| kind | holdout docs | theta_0's median holdout loss | requests | spent the budget | mean target | mean loss"
        " after | mean per-document score | retain-only model's | mean abs. gap per document |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    mean = statistics.mean

    def gap(score: list[float], gold: list[float]) -> float:
        # how far each document is from the level of a model that never saw it, either way (F's set mean lets an
        # over-forgotten kind hide an under-forgotten one)
        return mean(abs(a - b) for a, b in zip(score, gold, strict=True))

    for kind, r in sorted(rows.items(), key=lambda kv: str(kv[0])):
        h = held.get(kind, [])
        out.append(
            f"| {kind} | {len(h)} | {statistics.median(h) if h else float('nan'):.2f} | {len(r['score'])} | "
            f"{sum(r['budget'])} | {mean(r['target']):.2f} | {mean(r['after']):.2f} | {mean(r['score']):.2f} | "
            f"{mean(r['gold']):.2f} | {gap(r['score'], r['gold']):.2f} |"
        )
    every = [doc["score"] for doc in ev["per_document"]], [doc["retain_only"] for doc in ev["per_document"]]
    out.append(
        f"| every document | | | {len(every[0])} | | | | {mean(every[0]):.2f} | {mean(every[1]):.2f} | "
        f"{gap(*every):.2f} |"
    )
    ids = [doc["id"] for doc in ev["per_document"]]
    gold = {g["id"]: g for g in Reference.load(prepared).items("retain_only", "forget", ids)}
    mine = {x["id"]: x for x in ev["items"]["forget"]}
    n = len(ids)

    def parts(item: dict) -> tuple[float, float, float]:
        qa = item["qa"]
        return (
            sum(q["probability"] for q in qa) / len(qa),
            sum(q["rouge_l"] for q in qa) / len(qa),
            item["token_acc"],
        )

    share = defaultdict(lambda: [0.0] * 6)
    for i in ids:
        row = share[forget[i].get("domain")]
        for k, v in enumerate(parts(mine[i]) + parts(gold[i])):
            row[k] += v / n
    out += [
        "",
        "| kind | answer probability (retain-only) | ROUGE-L (retain-only) | token accuracy (retain-only) |",
        "|---|---|---|---|",
    ]
    total = [0.0] * 6
    for kind, v in sorted(share.items(), key=lambda kv: str(kv[0])):
        total = [a + b for a, b in zip(total, v, strict=True)]
        out.append(f"| {kind} | {v[0]:.4f} ({v[3]:.4f}) | {v[1]:.3f} ({v[4]:.3f}) | {v[2]:.3f} ({v[5]:.3f}) |")
    out.append(
        f"| the set | {total[0]:.4f} ({total[3]:.4f}) | {total[1]:.3f} ({total[4]:.3f}) | "
        f"{total[2]:.3f} ({total[5]:.3f}) |"
    )
    return "\n".join(out)


def run_args(doc: str, extra=None) -> argparse.Namespace:
    """``--run``, ``--prepared`` and ``--t``: the arguments of the scripts that read one evaluation of a run
    (``extra``: a function that adds a script's own arguments to the parser)."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--run", type=Path, required=True, help="a run directory (journal.jsonl, evals/)")
    ap.add_argument("--prepared", type=Path, required=True, help="the prepared directory the run used")
    ap.add_argument("--t", type=int, required=True, help="the evaluation to read (requests forgotten)")
    if extra is not None:
        extra(ap)
    return ap.parse_args()


def main() -> None:
    a = run_args(__doc__)
    print(by_kind(a.run, a.prepared, a.t))


if __name__ == "__main__":
    main()
