"""Which forgotten questions a row edit can reach: each forgotten document's QA pairs at one evaluation, split by
kind (``domain``) and by whether the question, tokenised as the evaluation prompts it, holds a token the request
edited (``own``), a token some other request edited (``other``) or none (``none``), with the mean answer probability
and ROUGE-L against the retain-only model's on the same questions (``reference.json``).  A row edit changes only
what follows an edited token, so a ``none`` question is read as theta_0 read it (benchmarks/README.md, "Session 28").

``--count``: an ``own`` question is split by how many distinct tokens the request edited it holds (``own x1``,
``own x2+``): on prose, whose questions are read in common words, one edited word is often not enough to move the
answer (benchmarks/README.md, "Session 30").

Reads a run's journal and evaluation file and the prepared directory's reference and tokenizer; runs no model.

    python benchmarks/question_keys.py --run fit_runs/s26-synth120/runs/fit-s0 --prepared fit_runs/prepared120 --t 40

Prints a Markdown table.
"""

from __future__ import annotations

import json
from collections import defaultdict

from by_kind import _jsonl, run_args  # benchmarks/by_kind.py, beside this script
from transformers import AutoTokenizer

from fit_unlearn.data.documents import QA
from fit_unlearn.text import encode_qa


def main() -> None:
    args = run_args(
        __doc__,
        lambda ap: ap.add_argument(
            "--count", action="store_true", help="split own questions by how many edited tokens they hold"
        ),
    )

    tok = AutoTokenizer.from_pretrained(args.prepared / "theta0")
    rows: dict[str, set[int]] = {}
    for e in _jsonl(args.run / "journal.jsonl"):
        if e.get("event") == "applied":
            rows[e["id"]] = set((e["record"].get("rows") or {}).get("tokens", []))
    ev = json.loads((args.run / "evals" / f"eval-t{args.t:05d}.json").read_text())
    ref = json.loads((args.prepared / "reference.json").read_text())
    gold = {d["id"]: d for d in ref["retain_only"]["forget"]}
    kinds = {d["id"]: d.get("domain", "?") for d in _jsonl(args.prepared / "data" / "forget.jsonl")}
    edited = set().union(*(rows.get(d["id"], set()) for d in ev["items"]["forget"]))
    agg: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0, 0.0, 0.0, 0.0, 0.0])
    for d in ev["items"]["forget"]:
        for q, g in zip(d["qa"], gold[d["id"]]["qa"], strict=True):
            ids, n = encode_qa(tok, QA(q["question"], q["answer"]), max_len=1 << 30)
            prompt = set(ids[:n])
            own = len(prompt & rows.get(d["id"], set()))
            reach = "own" if own else "other" if prompt & edited else "none"
            if own and args.count:
                reach = "own x1" if own == 1 else "own x2+"
            a = agg[(kinds.get(d["id"], "?"), reach)]
            a[0] += 1
            a[1] += q["probability"]
            a[2] += g["probability"]
            a[3] += q["rouge_l"]
            a[4] += g["rouge_l"]
    print(f"Run `{args.run}`, t = {args.t}\n")
    print("| kind | question holds | questions | answer probability (retain-only) | ROUGE-L (retain-only) |")
    print("|---|---|---|---|---|")
    for (kind, reach), (n, p, pg, r, rg) in sorted(agg.items()):
        print(f"| {kind} | {reach} | {n:.0f} | {p / n:.4f} ({pg / n:.4f}) | {r / n:.3f} ({rg / n:.3f}) |")


if __name__ == "__main__":
    main()
