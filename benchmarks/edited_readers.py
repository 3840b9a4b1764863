"""Which retain-eval documents a row-edit run damaged, and which edited tokens each of them reads.

Row edits move the input rows of tokens the index holds in one document only; retain-eval is kept out of the index
(it measures utility), so a retain-eval document can read a token a request edited.  For one evaluation of a run,
this lists every retain-eval document whose composite score moved more than ``--min-drop`` from theta_0's, or that
reads an edited token, with the edited tokens in its text and QA pairs (which of them did the damage is not
measured here).  Reads only what the run and the prepared directory wrote, and the tokenizer.

    python benchmarks/edited_readers.py --run fit_runs/bench-s18-synth120/runs/ga-rows-loop-s0 \\
        --prepared fit_runs/prepared120 --t 120 --out benchmarks/results/s18-edited-readers-synth120.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from transformers import AutoTokenizer

from fit_unlearn.data.documents import read_jsonl
from fit_unlearn.engine.rows import document_tokens
from fit_unlearn.metrics.scores import doc_score


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="a run directory (journal.jsonl, evals/)")
    ap.add_argument("--prepared", type=Path, required=True)
    ap.add_argument("--t", type=int, required=True, help="the evaluation (requests applied)")
    ap.add_argument("--min-drop", type=float, default=1.0, help="score points below theta_0's to list a document")
    ap.add_argument("--out", type=Path, required=True, help="a Markdown file")
    args = ap.parse_args()

    tok = AutoTokenizer.from_pretrained(args.prepared / "theta0")
    edited: dict[int, tuple[str, str]] = {}  # token id -> (decoded, first request that edited it)
    with open(args.run / "journal.jsonl") as f:
        for line in f:
            event = json.loads(line)
            rows = event.get("record", {}).get("rows", {}) if event["event"] == "applied" else {}
            if rows.get("edited") and event["position"] < args.t:
                for t, d in zip(rows["tokens"], rows["decoded"], strict=True):
                    edited.setdefault(t, (d, event["id"]))
    ev = json.loads((args.run / "evals" / f"eval-t{args.t:05d}.json").read_text())
    ref = json.loads((args.prepared / "reference.json").read_text())
    theta0 = {d["id"]: doc_score(d) for d in ref["theta0"]["retain"]}
    docs = {d.id: d for d in read_jsonl(args.prepared / "data" / "retain.jsonl")}
    rows_out, drops = [], []
    for item in ev["items"]["retain"]:
        d, score = docs[item["id"]], doc_score(item)
        ids = document_tokens(tok, d.text, d.qa)  # as the index counts a document's tokens
        held = sorted((edited[i][0], edited[i][1]) for i in ids if i in edited)
        drops.append(theta0[d.id] - score)
        if theta0[d.id] - score > args.min_drop or held:
            shown = ", ".join(f"`{tok_!r}` ({req})" for tok_, req in held) or "none"
            rows_out.append(f"| {d.id} | {theta0[d.id]:.1f} | {score:.1f} | {shown} |")
    lines = [
        f"# Retain-eval documents against the rows edited by t = {args.t} (`{args.run}`)",
        "",
        f"{len(edited)} rows edited by {args.t} requests; {len(drops)} retain-eval documents, mean score drop "
        f"{sum(drops) / len(drops):.2f} points (per-document composites; the split's R is the composite of means).",
        "",
        "| document | theta_0 | at t | edited tokens it reads (first request that edited each) |",
        "|---|---|---|---|",
        *rows_out,
        "",
    ]
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
