"""Downstream utility through lm-evaluation-harness, on the in-memory model (no re-implementation).

MMLU, CommonsenseQA and GSM8K are lm-eval's own tasks; their data comes from the Hugging Face hub, which
is not reachable offline: then a clear error says how to provide the data.  fit-unlearn also ships its
own small offline tasks (its own items, generated from the MIT-licensed ``countryinfo`` facts and from
arithmetic), usable anywhere: ``fit_capitals`` (multiple choice) and ``fit_arithmetic`` (generation).
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

from fit_unlearn.errors import ConfigError
from fit_unlearn.metrics.probes import capital_probes
from fit_unlearn.models import cache_dir

log = logging.getLogger(__name__)
OWN_TASKS = ("fit_capitals", "fit_arithmetic")
HUB_HINT = {
    "mmlu": "cais/mmlu",
    "commonsense_qa": "tau/commonsense_qa",
    "gsm8k": "openai/gsm8k",
}

_CAPITALS_YAML = """task: fit_capitals
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: What is the capital of {{{{country}}}}?\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: label
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""

_ARITH_YAML = """task: fit_arithmetic
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["\\n", "."]
  max_gen_toks: 8
  do_sample: false
filter_list:
  - name: strip
    filter:
      - function: regex
        regex_pattern: "(-?[0-9]+)"
      - function: take_first
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""


def write_own_tasks(directory: Path, n: int = 40, seed: int = 0) -> Path:
    """Write the project's own offline tasks (YAML + JSONL) into ``directory``; returns it."""

    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    probes = capital_probes(200, seed)
    capitals = sorted({p.answer for p in probes})
    rows = []
    for p in probes[:n]:
        wrong = rng.sample([c for c in capitals if c != p.answer], 3)
        choices = [p.answer, *wrong]
        rng.shuffle(choices)
        country = p.prompt.removeprefix("The capital of ").removesuffix(" is")
        rows.append({"country": country, "choices": [" " + c for c in choices], "label": choices.index(p.answer)})
    (directory / "capitals.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    arith = []
    for _ in range(n):
        a, b = rng.randint(2, 40), rng.randint(2, 40)
        q = rng.choice(
            [
                (f"Tom has {a} apples and buys {b} more. How many apples does he have?", a + b),
                (f"A box holds {a} pens. {min(a, b)} are taken out. How many pens are left?", a - min(a, b)),
            ]
        )
        arith.append({"question": q[0], "answer": str(q[1])})
    (directory / "arithmetic.jsonl").write_text("\n".join(json.dumps(r) for r in arith) + "\n")
    (directory / "fit_capitals.yaml").write_text(_CAPITALS_YAML.format(data=directory / "capitals.jsonl"))
    (directory / "fit_arithmetic.yaml").write_text(_ARITH_YAML.format(data=directory / "arithmetic.jsonl"))
    return directory


def run_downstream(
    model,
    tok,
    tasks: list[str],
    *,
    include_path: str | Path | None = None,
    limit: int | None = None,
    batch_size: int = 8,
    workdir: Path | None = None,
) -> dict:
    """Accuracy of ``model`` on lm-eval tasks; returns {task: {metric: value}} plus the harness' versions."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    paths = [str(write_own_tasks((workdir or cache_dir()) / "lm_eval_tasks"))]
    if include_path:
        paths.append(str(include_path))
    tm = TaskManager(include_path=paths)
    unknown = [t for t in tasks if t not in tm.all_tasks]
    if unknown:
        raise ConfigError(
            f"unknown lm-eval task(s) {', '.join(unknown)}; this project's offline tasks: "
            f"{', '.join(OWN_TASKS)}; lm-eval's own include mmlu, commonsense_qa, gsm8k"
        )
    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=batch_size, device=str(next(model.parameters()).device))
    results = {}
    for task in tasks:
        try:
            res = lm_eval.simple_evaluate(
                model=lm, tasks=[task], task_manager=tm, limit=limit, log_samples=False, bootstrap_iters=0
            )
        except Exception as e:  # noqa: BLE001 - the harness raises many kinds when data is unreachable
            if task in OWN_TASKS:
                raise
            hub = HUB_HINT.get(task.split("_")[0] if task.startswith("mmlu") else task, "its dataset")
            raise ConfigError(
                f"task {task!r}: its data is not available here ({type(e).__name__}: {str(e).splitlines()[0][:160]}). "
                f"lm-eval reads it from the Hugging Face hub ({hub}); on a machine with network run "
                f"`huggingface-cli download {hub} --repo-type dataset` and copy the cache (HF_DATASETS_CACHE / "
                f"HF_HOME), or write a local YAML task (dataset_path: json, data_files: your file) and pass its "
                "folder with --tasks-dir"
            ) from None
        task_res = res["results"][task]
        results[task] = {
            k.split(",")[0]: v
            for k, v in task_res.items()
            if isinstance(v, int | float) and "stderr" not in k and k != "alias"
        }
    return results
