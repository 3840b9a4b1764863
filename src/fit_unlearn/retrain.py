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
per checkpoint (1.5-5 minutes for 40-60 documents of the default model on 2 CPU cores): a benchmark
reference, never a stop target (retraining is what unlearning is there to avoid).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from fit_unlearn.data.prepared import prepared_data
from fit_unlearn.data.streams import stream_order
from fit_unlearn.errors import ConfigError
from fit_unlearn.evaluation import scoring_stamp
from fit_unlearn.layout import PreparedDir
from fit_unlearn.metrics.probes import replay_facts
from fit_unlearn.metrics.scores import evaluate_split
from fit_unlearn.models import load_model, model_hash, save_model
from fit_unlearn.prepare import train_gold
from fit_unlearn.training import FinetuneConfig

log = logging.getLogger(__name__)


def entry_key(forgotten: Sequence[str], seed: int, training_key: str) -> str:
    """The directory name of one reference: the forgotten set (order-free), the seed and the training inputs."""
    blob = json.dumps({"forgotten": sorted(forgotten), "seed": seed, "training": training_key})
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def stream_prefixes(
    prepared: str | Path | PreparedDir, order_seed: int | None, steps: Sequence[int]
) -> list[list[str]]:
    """The forgotten sets of a stream over the prepared forget split (``stream.order_seed``) after each step t
    below the whole split (at t = T the retain-only model is the exact reference already)."""
    forget = prepared_data(prepared).forget
    ids = [d.id for d in stream_order(forget, order_seed)]
    return [ids[:t] for t in steps if 0 < t < len(ids)]


def _read(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path.parent}: no {path.name}; run `fit-unlearn prepare` to make it {what}") from None
    except ValueError as e:
        raise ConfigError(f"{path}: not valid JSON ({e}); run `fit-unlearn prepare` again") from None


def build_retrain_reference(
    prepared: str | Path | PreparedDir,
    forgotten: Sequence[str],
    *,
    seed: int | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> dict:
    """Retrain theta_0's recipe without ``forgotten`` (forget document ids) and score those documents; kept
    under ``<prepared>/retrain/<key>/`` and returned as is by a later call with the same set and seed (rescored,
    not retrained, when the evaluation data or scorer changed since: new paraphrases, another reference version)."""
    prep = PreparedDir.of(prepared)
    recipe = _read(prep.recipe, "a prepared directory")
    stages = _read(prep.stages, "a prepared directory")
    scored = scoring_stamp(_read(prep.reference, "a prepared directory"))
    data = prepared_data(prep)
    by_id = {d.id: d for d in data.forget}
    unknown = [i for i in forgotten if i not in by_id]
    if unknown:
        raise ConfigError(
            f"{unknown[:3]} are not forget documents of {prep.root}: retrain without documents of its forget split"
        )
    try:
        theta0_seed = FinetuneConfig.model_validate(recipe["finetune"]).seed
        seed = theta0_seed if seed is None else seed
        cfg = FinetuneConfig.model_validate({**recipe["finetune"], "seed": seed})
        train_on_qa, freeze, dtype = recipe["train_on_qa"], recipe["freeze_embeddings"], recipe["dtype"]
        base, base_hash, training_key = Path(recipe["base_model"]), recipe["base_model_hash"], stages["key"]
    except (KeyError, ValidationError) as e:
        raise ConfigError(
            f"{prep.recipe}: written by another fit-unlearn ({str(e).splitlines()[0]}); run `fit-unlearn prepare` again"
        ) from None
    if not forgotten:
        raise ConfigError("a retrain reference needs at least one forgotten document")
    if len(set(forgotten)) == len(by_id) and seed == theta0_seed:
        raise ConfigError(
            "every forget document forgotten with theta_0's seed is the retain-only model itself; give another seed "
            "to measure how far two such models differ"
        )
    where = prep.retrain_entry(entry_key(forgotten, seed, training_key))
    done = where / "retrain.json"
    docs = [by_id[i] for i in forgotten]
    try:
        entry = json.loads(done.read_text()) if done.exists() else None
    except ValueError:
        entry = None  # unreadable: built again
    if entry is not None and entry.get("scored") == scored:
        return entry
    if entry is not None and (where / "config.json").exists():  # the evaluation data or scorer changed: rescore
        model, tok = load_model(where, device=device, dtype=dtype)
        training = entry["training"]
    else:
        if not (base / "config.json").exists() or model_hash(base) != base_hash:
            raise ConfigError(
                f"{base}: not the base model theta_0 was fine-tuned from (missing or changed); a retrain reference "
                "needs it: restore it or prepare again"
            )
        gone = set(forgotten)
        kept = [d for d in data.forget if d.id not in gone] + list(data.retain)
        replay = recipe.get("replay") or {}
        facts = replay_facts(replay["n"], replay.get("probe_n", stages["base_probe"]["n"])) if replay.get("n") else []
        model, tok, res = train_gold(
            base,
            kept,
            cfg,
            train_on_qa=train_on_qa,
            freeze_embeddings=freeze,
            replay=facts,
            device=device,
            dtype=dtype,
            desc=f"retrain without {len(gone)}",
            progress=progress,
        )
        save_model(model, tok, where)
        training = {
            "documents": len(kept),
            "epochs": res.epochs_run,
            "steps": res.steps,
            "seconds": res.seconds,
            "device": device,
        }
    scores = evaluate_split(model, tok, docs, paraphrases=True, progress=progress)
    entry = {
        "forgotten": list(forgotten),
        "seed": seed,
        "training_key": training_key,
        "scored": scored,
        "training": training,
        "score": scores.summary(),
        "items": scores.items,
    }
    tmp = done.with_suffix(".json.tmp")  # last, and whole: a directory without it is an interrupted build, redone
    tmp.write_text(json.dumps(entry))
    os.replace(tmp, done)
    log.info("retrain reference without %d documents: F %.2f (%s)", len(docs), scores.score, where)
    return entry


__all__ = ["build_retrain_reference", "entry_key", "stream_prefixes"]
