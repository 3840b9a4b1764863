"""Where a row-edited model still predicts a forgotten document: teacher-forced argmax accuracy over each forgotten
document's text, split by position against the request's edited rows (its own tokens, from the run's journal):

* ``own``: the target is one of the request's own tokens;
* ``before``: the target comes before the first own token of the input (no edited row can reach it);
* ``after``: every other target (an edited row is somewhere in its context).

For theta_0, the retain-only model and the run's last checkpoint.  ``benchmarks/token_kind_accuracy.py`` splits by
kind (own / template / other); this splits by position.

    python benchmarks/token_position_accuracy.py fit_runs/bench-s18-synth120-final/runs/ga-rows-loop-s0 \\
        fit_runs/prepared120 > benchmarks/results/s20-token-positions-synth120.txt
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from fit_unlearn.data.prepared import prepared_data  # noqa: E402
from fit_unlearn.text import doc_example  # noqa: E402


def main(run: Path, prepared: Path) -> None:
    rows: dict[str, set[int]] = {}
    for line in (run / "journal.jsonl").read_text().splitlines():
        e = json.loads(line)
        if e.get("event") == "applied" and e["record"].get("rows"):
            rows[e["id"]] = set(e["record"]["rows"]["tokens"])
    docs = {d.id: d for d in prepared_data(prepared).forget}
    tok = AutoTokenizer.from_pretrained(prepared / "theta0")
    last = sorted((run / "checkpoints").iterdir())[-1] / "model"
    for name, path in (("theta0", prepared / "theta0"), ("retain_only", prepared / "retain_only"), ("run", last)):
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        counts = {"own": [0, 0], "before": [0, 0], "after": [0, 0]}
        for doc_id, own in rows.items():
            ids = torch.tensor([doc_example(tok, docs[doc_id].text, 512).ids])
            with torch.no_grad():
                pred = model(ids).logits[0, :-1].argmax(-1)
            seen = False
            for j, target in enumerate(ids[0, 1:].tolist()):
                seen = seen or ids[0, j].item() in own
                kind = "own" if target in own else ("after" if seen else "before")
                counts[kind][0] += int(pred[j].item() == target)
                counts[kind][1] += 1
        right, total = sum(c[0] for c in counts.values()), sum(c[1] for c in counts.values())
        split = ", ".join(f"{k} {c[0] / max(c[1], 1):.3f} of {c[1]}" for k, c in counts.items())
        print(f"{name}: accuracy {right / total:.3f} ({split})", flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
