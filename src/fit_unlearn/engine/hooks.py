"""What the engine does around the stream, kept out of its loop: evaluation at checkpoints, the recovery
attacks at the end, and the results file.  The engine decides *when*; these decide *what* and write it.

Each hook works on the prepared directory's data with the honest protocol (``docs/metrics.md``): the
forgotten documents as the prepared ones (with their paraphrases), the pending ones for collateral
forgetting, retain-eval for utility, T = the forget set's size.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence

from fit_unlearn.attacks.quantize import quantize_attack
from fit_unlearn.attacks.relearn import relearn_attack
from fit_unlearn.data.documents import DataSplits, Document
from fit_unlearn.engine.config import EvalSection
from fit_unlearn.evaluation import Reference, evaluate_model
from fit_unlearn.layout import GOLD_MODELS, PreparedDir, RunDir
from fit_unlearn.metrics.downstream import run_downstream
from fit_unlearn.models import load_model


class Evaluation:
    """Evaluation and attacks of one run against its prepared directory."""

    def __init__(self, prepared: PreparedDir, data: DataSplits, cfg: EvalSection, run_dir: RunDir, device: str):
        self.prepared, self.data, self.cfg, self.run_dir, self.device = prepared, data, cfg, run_dir, device
        self._prepared_docs = {d.id: d for d in data.forget}

    @property
    def T(self) -> int:
        """T of the references: the prepared forget set's size (or ``eval.T``), never ``stream.limit``."""
        return self.cfg.T or len(self.data.forget)

    def as_prepared(self, request: Document) -> Document:
        """The prepared forget document a request stands for (it carries the paraphrases), else the request."""
        doc = self._prepared_docs.get(request.id)
        return doc if doc is not None and doc.text == request.text else request

    def evaluate(self, model, tok, forgotten: Sequence[Document], applied_ids, write: bool = True) -> tuple[dict, dict]:
        """(journal summary, full result) at t = len(forgotten); the full result goes to ``evals/`` (unless
        ``write`` is false: a non-main rank of a sharded run, which runs the forwards only)."""

        t = len(forgotten)
        t0 = time.perf_counter()
        res = evaluate_model(
            model,
            tok,
            forgotten=[self.as_prepared(d) for d in forgotten],
            pending=[d for d in self.data.forget if d.id not in applied_ids],
            retain=self.data.retain_eval,
            holdout=self.data.holdout,
            reference=Reference.load(self.prepared),
            t=t,
            T=self.T,
            batch_size=self.cfg.batch_size,
        )
        if self.cfg.downstream:
            res["downstream"] = run_downstream(
                model,
                tok,
                list(self.cfg.downstream),
                include_path=self.cfg.tasks_dir,
                limit=self.cfg.downstream_limit,
                workdir=self.run_dir.root,
            )
        res["seconds"] = time.perf_counter() - t0  # wall time of this evaluation, downstream tasks included
        items = res.pop("items")
        per_doc = res.pop("per_document", None)
        if write:
            self.run_dir.evals.mkdir(exist_ok=True)
            self.run_dir.eval_file(t).write_text(json.dumps({**res, "per_document": per_doc, "items": items}, indent=1))
        summary = {"t": t, **{k: v for k, v in res.items() if k != "t"}}
        return summary, {**res, "items": items, "per_document": per_doc}

    def attacks(
        self,
        final_model,
        forgotten: Sequence[Document],
        *,
        dtype: str,
        seed: int,
        progress: bool,
        embeddings: bool = False,
    ) -> dict:
        """The configured recovery attacks on the final model (``embeddings``: the quantize attacks round the
        token embeddings and the output layer too)."""

        ref = Reference.load(self.prepared)
        docs = [self.as_prepared(d) for d in forgotten]
        out: dict = {}
        bits = [int(a[-1]) for a in self.cfg.attacks if a.startswith("quantize")]
        if bits:
            out["quantize"] = quantize_attack(
                {"unlearned": final_model, **{name: self.prepared.model(name) for name in GOLD_MODELS}},
                bits,
                docs,
                self.data.retain_eval,
                ref,
                method=self.cfg.quantize_method,
                device=self.device,
                embeddings=embeddings,
                t=len(docs),
                T=self.T,
            )
        if "relearn" in self.cfg.attacks and len(docs) >= 2:
            m, tok = load_model(final_model, device=self.device, dtype=dtype)
            out["relearn"] = relearn_attack(
                m,
                tok,
                docs,
                self.data.retain_eval,
                ref,
                fraction=self.cfg.relearn_fraction,
                lr=self.cfg.relearn_lr,
                epochs=self.cfg.relearn_epochs,
                seed=seed,
                progress=progress,
            )
            del m
        return out


def write_results(run_dir: RunDir, results: dict) -> None:
    """results.json, atomically (temp file + rename)."""
    tmp = run_dir.results.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=1))
    os.replace(tmp, run_dir.results)


def progress_postfix(evals: list[dict]) -> dict | None:
    """What the progress bar shows after an evaluation: t, strict F.D. and R.U. (n/a where undefined)."""
    if not evals or "retain_utility" not in evals[-1]:
        return None
    e = evals[-1]

    def fmt(v):
        return "n/a" if v is None else f"{v:.3f}"

    out = {"t": e["t"], "F.D.strict": fmt(e.get("forget_degree_strict")), "R.U.": fmt(e.get("retain_utility"))}
    if e.get("forget_degree_retrain") is not None:  # against exact unlearning (fit_unlearn.retrain)
        out["F.D.retrain"] = fmt(e["forget_degree_retrain"])
    return out
