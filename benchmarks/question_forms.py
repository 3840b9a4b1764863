"""Does an unlearned model still answer each question form about documents no request touched?

Derives every QA pair the engine can derive (``derive_qa``: "What is the address of ...?", "How old is ...?", "In
which programming language is ... written?", ...) for the prepared retain and holdout documents, which no request of
a run names (retain includes retain-train, the anchors of weight updates; row edits use none), and scores
P(answer | question)^(1/|answer|) under theta_0 and under each model given, grouped by the question's form.  The
benchmark's R scores retain-eval's stored QA pairs, one form per document; a row edit that breaks another form for
every document shows here and not there.

    python benchmarks/question_forms.py --prepared fit_runs/prepared \\
        --models fit_runs/s17-mal40-rows/checkpoints/ckpt-000040/model --out benchmarks/results/s17-question-forms.json
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import torch

from fit_unlearn.data.documents import read_jsonl
from fit_unlearn.data.qa import derive_qa
from fit_unlearn.metrics.scores import qa_probabilities
from fit_unlearn.models import load_model


def form(question: str) -> str:
    """The question with its subject left out: the words before the name, title or identifier."""
    words = question.split(" ")
    if question.startswith("What is the"):
        return " ".join(words[:5])  # "What is the address of", "What is the occupation of"
    if question.startswith("How old"):
        return "How old is"
    if question.startswith("In which"):
        return "In which programming language is"
    if question.startswith("Which category"):
        return "Which category does"
    m = re.match(r'What does (the paper )?"[^"]*" (\w+)', question)
    if m:
        return f"What does {'the paper ' if m.group(1) else ''}... {m.group(2)}"
    if re.match(r"What does the \S+ (function|snippet) ", question):
        return "What does the <language> function ... do"
    return " ".join(words[:3])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prepared", type=Path, required=True)
    ap.add_argument("--models", nargs="+", required=True, help="model directories (a checkpoint's model/)")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    docs = read_jsonl(a.prepared / "data" / "retain.jsonl") + read_jsonl(a.prepared / "data" / "holdout.jsonl")
    groups: dict[str, list] = {}
    for d in docs:
        for q in derive_qa(d.text, d.id, warn=False):
            groups.setdefault(form(q.question), []).append(q)
    out = {"prepared": str(a.prepared), "documents": len(docs), "forms": {k: len(v) for k, v in groups.items()}}
    scores = {}
    for path in [a.prepared / "theta0", *map(Path, a.models)]:
        model, tok = load_model(path)
        model.eval()
        with torch.no_grad():
            scores[str(path)] = {k: sum(qa_probabilities(model, tok, v)) / len(v) for k, v in groups.items()}
        del model
    out["probability"] = scores
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=1))
    names = list(scores)
    print("| question form | n | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(names))
    for k, n in out["forms"].items():
        print(f"| {k} | {n} | " + " | ".join(f"{scores[m][k]:.3f}" for m in names) + " |")


if __name__ == "__main__":
    main()
