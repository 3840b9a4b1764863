"""Exact-unlearning references: theta_0's recipe retrained without the documents forgotten by step t.

Strict F.D. compares the forgotten documents with the **retain-only** model, theta_0's recipe on the retain
documents alone.  At the end of a stream over the whole forget set (t = T) that *is* the model retraining
without every requested document gives.  Before the end it is not: retraining without the t documents
forgotten so far still trains on the T - t pending ones, so the model learns the kind of document from more
data and predicts the forgotten ones better than the retain-only model does.  A benchmark that wants to know
whether each deletion happened *as retraining would have done it* needs that model at each checkpoint
(``docs/metrics.md``, "F.D. against exact unlearning").

:func:`build_retrain_reference` trains theta_0's recipe (``recipe.json``: base model, hyper-parameters, QA pairs,
replay facts, seed) on the retain documents and the forget documents not in ``forgotten``, scores the forgotten
ones with the evaluation's own scorer (paraphrases included), and keeps model and scores under
``<prepared>/retrain/<key>/``.  :class:`~fit_unlearn.evaluation.Reference` reads them back:
an evaluation whose forgotten set matches one reports ``forget_degree_retrain``.  It costs a fine-tuning run
per checkpoint (about 3-5 minutes for 40-60 documents of the default model on 2 CPU cores): a benchmark
reference, never a stop target (retraining is what unlearning is there to avoid).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from fit_unlearn.data.prepared import prepared_data
from fit_unlearn.data.streams import stream_order
from fit_unlearn.errors import ConfigError
from fit_unlearn.layout import PreparedDir
from fit_unlearn.metrics.probes import replay_facts
from fit_unlearn.metrics.scores import evaluate_split
from fit_unlearn.models import load_model, model_hash, save_model
from fit_unlearn.text import doc_example, training_examples
from fit_unlearn.training import FinetuneConfig, finetune

log = logging.getLogger(__name__)


def entry_key(forgotten: Sequence[str], seed: int, training_key: str) -> str:
    """The directory name of one reference: the forgotten set (order-free), the seed and the training inputs."""
    blob = json.dumps({"forgotten": sorted(forgotten), "seed": seed, "training": training_key})
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def checkpoints(requests: int, every: int | None) -> list[int]:
    """The steps t a stream of ``requests`` evaluates at: every ``every`` requests and at the end."""
    ts = set(range(every, requests + 1, every)) if every else set()
    return sorted(ts | {requests})


def stream_prefixes(
    prepared: str | Path | PreparedDir, order_seed: int | None, steps: Sequence[int]
) -> list[list[str]]:
    """The forgotten sets of a stream over the prepared forget split (``stream.order_seed``) after each step t
    below the whole split (at t = T the retain-only model is the exact reference already)."""
    forget = prepared_data(prepared).forget
    ids = [d.id for d in stream_order(forget, order_seed)]
    return [ids[:t] for t in steps if 0 < t < len(ids)]


def build_retrain_reference(
    prepared: str | Path | PreparedDir,
    forgotten: Sequence[str],
    *,
    seed: int | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> dict:
    """Retrain theta_0's recipe without ``forgotten`` (forget document ids) and score those documents; kept
    under ``<prepared>/retrain/<key>/`` and returned as is by a later call with the same set and seed."""
    prep = PreparedDir.of(prepared)
    if not prep.recipe.exists() or not prep.stages.exists():
        raise ConfigError(f"{prep.root}: not a prepared directory (no recipe.json); run `fit-unlearn prepare` first")
    recipe = json.loads(prep.recipe.read_text())
    stages = json.loads(prep.stages.read_text())
    data = prepared_data(prep)
    by_id = {d.id: d for d in data.forget}
    unknown = [i for i in forgotten if i not in by_id]
    if unknown:
        raise ConfigError(
            f"{unknown[:3]} are not forget documents of {prep.root}: retrain without documents of its forget split"
        )
    cfg = FinetuneConfig.model_validate(recipe["finetune"])
    seed = cfg.seed if seed is None else seed
    if not forgotten or (len(set(forgotten)) == len(by_id) and seed == cfg.seed):
        raise ConfigError(
            "a retrain reference forgets some of the forget documents, not none, nor all with theta_0's seed (that is "
            "the retain-only model); another --seed measures how far two such models differ"
        )
    cfg = cfg.model_copy(update={"seed": seed})
    where = prep.retrain_entry(entry_key(forgotten, seed, stages["key"]))
    done = where / "retrain.json"
    if done.exists():
        return json.loads(done.read_text())
    base = Path(recipe["base_model"])
    if not (base / "config.json").exists() or model_hash(base) != recipe["base_model_hash"]:
        raise ConfigError(
            f"{base}: not the base model theta_0 was fine-tuned from (missing or changed); a retrain reference needs "
            "it: restore it or prepare again"
        )
    gone = set(forgotten)
    kept = [d for d in data.forget if d.id not in gone] + list(data.retain)
    model, tok = load_model(base, device=device, dtype=recipe.get("dtype", "fp32"))
    if recipe.get("freeze_embeddings"):
        for emb in (model.get_input_embeddings(), model.get_output_embeddings()):
            if emb is not None:
                emb.weight.requires_grad_(False)
    examples = training_examples(tok, kept, with_qa=recipe["train_on_qa"])
    n_replay = (recipe.get("replay") or {}).get("n", 0)
    if n_replay:
        examples += [doc_example(tok, f) for f in replay_facts(n_replay, stages["base_probe"]["n"])]
    res = finetune(model, tok, examples, cfg, desc=f"retrain without {len(gone)}", progress=progress)
    scores = evaluate_split(model, tok, [by_id[i] for i in forgotten], paraphrases=True, progress=progress)
    save_model(model, tok, where)
    entry = {
        "forgotten": list(forgotten),
        "seed": seed,
        "training_key": stages["key"],
        "trained_on": len(kept),
        "training": {"epochs": res.epochs_run, "steps": res.steps, "seconds": res.seconds},
        "score": scores.summary(),
        "items": scores.items,
    }
    done.write_text(json.dumps(entry))  # last: a directory without it is an interrupted build, redone
    log.info("retrain reference without %d documents: F %.2f (%s)", len(gone), scores.score, where)
    return entry


__all__ = ["build_retrain_reference", "checkpoints", "entry_key", "stream_prefixes"]
