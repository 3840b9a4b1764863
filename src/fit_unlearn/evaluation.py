"""Evaluate a model against a prepared directory at step t of a stream (see ``docs/metrics.md``).

The honest protocol:

* **forgotten** = the documents requested so far.  F is scored on their own training items (the document's
  token accuracy, its QA pairs) and, separately, on paraphrased questions about the same facts that no model
  was ever trained on.
* **pending** = the prepared forget documents not requested yet: they must still look like theta_0's
  (collateral forgetting).
* **retain** = retain-eval only: the retain documents that no unlearning step uses as an anchor.

Every reference is computed from the per-document values of theta_0 and of the retain-only model
(``reference.json``) on exactly the documents scored, so any subset at any t is exact without re-running the
gold models.  T is the number of forget documents in the prepared set (never the length of a partial run).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from fit_unlearn.data.documents import DataSplits, Document
from fit_unlearn.data.prepared import prepared_data
from fit_unlearn.data.streams import stream_order
from fit_unlearn.errors import ConfigError
from fit_unlearn.layout import GOLD_MODELS as GOLD
from fit_unlearn.layout import PreparedDir
from fit_unlearn.metrics.downstream import run_downstream
from fit_unlearn.metrics.privacy import mean_extraction_strength, mia_auc
from fit_unlearn.metrics.probes import capital_probes, probe_accuracy
from fit_unlearn.metrics.reference import ReferencePoints, closeness, reference_at, retain_utility
from fit_unlearn.metrics.scores import doc_score, doc_token_stats, evaluate_split, scores_from_items
from fit_unlearn.models import load_model, model_hash
from fit_unlearn.provenance import provenance

#: bump when reference.json gains fields or its values are scored differently: an older file is rebuilt (the
#: gold models are rescored, not retrained).  2: paraphrases and probes; 3: token statistics over whole
#: documents (they stopped at 256 tokens)
REFERENCE_VERSION = 3


#: the three parts of a forget score F = 100 cbrt(p r a), as :func:`scores_from_items` names them
PARTS = ("probability", "rouge_l", "token_acc")


class Reference:
    """Per-document scores of theta_0 and of the retain-only model (``reference.json``)."""

    def __init__(self, data: dict, retrain: Sequence[dict] = ()):
        self.data = data
        self._index = {m: {s: {it["id"]: it for it in data[m][s]} for s in ("forget", "retain")} for m in GOLD}
        #: exact-unlearning references (``fit_unlearn.retrain``): each the forgotten set and its per-document items
        self._retrain = {frozenset(e["forgotten"]): {it["id"]: it for it in e["items"]} for e in retrain}

    @classmethod
    def load(cls, prepared: str | Path | PreparedDir) -> Reference:
        path = PreparedDir.of(prepared).reference
        if not path.exists():
            raise ConfigError(f"{path}: not found; run `fit-unlearn prepare` first (or point --prepared at its output)")
        data = json.loads(path.read_text())
        if data.get("version", 1) < REFERENCE_VERSION:
            raise ConfigError(
                f"{path}: written by an older fit-unlearn (no paraphrase or probe values, or token accuracy cut at "
                "256 tokens); run `fit-unlearn prepare` with the same arguments again: it rescores the gold models "
                "without retraining them"
            )
        return cls(data, retrain_entries(prepared))

    def retrain_items(self, forgotten: Sequence[str]) -> list[dict] | None:
        """The per-document items of the model retrained without exactly ``forgotten`` (theta_0's recipe and
        seed), in that order: the retain-only model when ``forgotten`` is the whole forget set, else a
        reference ``fit_unlearn.retrain`` built; None when there is none for that set."""
        if set(forgotten) == set(self.forget_ids):
            return self.items("retain_only", "forget", forgotten)
        idx = self._retrain.get(frozenset(forgotten))
        return None if idx is None else [idx[i] for i in forgotten]

    def items(self, model: str, split: str, ids: Sequence[str]) -> list[dict]:
        idx = self._index[model][split]
        missing = [i for i in ids if i not in idx]
        if missing:
            raise ConfigError(
                f"documents {missing[:3]} are not in the prepared {split} split; "
                "evaluate with the data of the prepared directory"
            )
        return [idx[i] for i in ids]

    def score(self, model: str, split: str, ids: Sequence[str]) -> dict:
        return scores_from_items(self.items(model, split, ids))

    def knows_forget(self, ids: Sequence[str]) -> bool:
        return all(i in self._index["theta0"]["forget"] for i in ids)

    @property
    def forget_ids(self) -> list[str]:
        return list(self._index["theta0"]["forget"])

    def mixture(self, forgotten: Sequence[str], pending: Sequence[str]) -> dict:
        """Scores of the gold mixture: forgotten documents at the retain-only model's values, the others
        at theta_0's (the whole-forget-set reference of the paper's F.D.)."""
        return scores_from_items(
            self.items("retain_only", "forget", forgotten) + self.items("theta0", "forget", pending)
        )

    def points(self, forget_ids: Sequence[str], retain_ids: Sequence[str]) -> ReferencePoints:
        return ReferencePoints(
            forget_0=self.score("theta0", "forget", forget_ids)["score"],
            retain_0=self.score("theta0", "retain", retain_ids)["score"],
            forget_T=self.score("retain_only", "forget", forget_ids)["score"],
            retain_T=self.score("retain_only", "retain", retain_ids)["score"],
        )

    @property
    def probe(self) -> dict | None:
        """Capital-probe settings and the gold models' accuracies ({n, seed, theta0, retain_only})."""
        return self.data.get("probe")

    @property
    def holdout_stats(self) -> list[dict]:
        return self.data.get("holdout_stats_theta0", [])


def scoring_stamp(reference: dict) -> dict:
    """What a set of per-document scores depends on besides the model: the evaluation data and the scorer's
    version, as ``reference.json`` records them (an exact-unlearning reference scored under another stamp is
    rescored)."""
    return {k: reference.get(k) for k in ("version", "data_hash")}


def retrain_entries(prepared: str | Path | PreparedDir, seed: int | None = None) -> list[dict]:
    """The exact-unlearning references under ``prepared`` (``retrain/*/retrain.json``) retrained from the
    prepared directory's current training inputs with ``seed`` (default: the recipe's, theta_0's own) and scored
    on its current evaluation data with the current scorer (``fit_unlearn.retrain`` rescores the others)."""
    prepared = PreparedDir.of(prepared)
    if not prepared.retrain.is_dir() or not prepared.stages.exists() or not prepared.reference.exists():
        return []
    key = json.loads(prepared.stages.read_text()).get("key")
    scored = scoring_stamp(json.loads(prepared.reference.read_text()))
    if seed is None and prepared.recipe.exists():
        seed = json.loads(prepared.recipe.read_text())["finetune"]["seed"]
    out = []
    for f in sorted(prepared.retrain.glob("*/retrain.json")):
        try:
            entry = json.loads(f.read_text())
        except ValueError:  # damaged: not a reference (`fit_unlearn.retrain` builds it again)
            continue
        if entry.get("training_key") == key and entry.get("seed") == seed and entry.get("scored") == scored:
            out.append(entry)
    return out


def build_reference(
    prepared: str | Path | PreparedDir,
    data: DataSplits,
    *,
    device: str = "cpu",
    dtype: str = "fp32",
    batch_size: int = 16,
    probe_n: int = 40,
    progress: bool = True,
) -> dict:
    """Score theta_0 and the retain-only model on every forget document (with paraphrases), every retain
    document and the capital probe; write reference.json.  Reused while data, models and settings match."""
    prepared = PreparedDir.of(prepared)
    path = prepared.reference
    key = {
        "version": REFERENCE_VERSION,
        "data_hash": data.hash(),
        "models_hash": _models_hash(prepared),
        "probe_n": probe_n,
    }
    ref: dict | None = None
    if path.exists():
        old = json.loads(path.read_text())
        if all(old.get(k) == v for k, v in key.items()):
            ref = old  # per-document values are still valid; only the split's summary may change
    if ref is None:
        ref = dict(key)
        probe: dict = {"n": probe_n, "seed": 0}
        probes = capital_probes(probe_n)
        for name in GOLD:
            model, tok = load_model(prepared.model(name), device=device, dtype=dtype)
            ref[name] = {
                "forget": evaluate_split(
                    model, tok, data.forget, batch_size=batch_size, progress=progress, paraphrases=True
                ).items,
                "retain": evaluate_split(model, tok, data.retain, batch_size=batch_size, progress=progress).items,
            }
            if probes:
                probe[name] = probe_accuracy(model, tok, probes)["accuracy"]
            if name == "theta0" and data.holdout:
                ref["holdout_stats_theta0"] = [_slim(s) for s in doc_token_stats(model, tok, data.holdout)]
            del model
        ref["probe"] = probe if probes else None
    ref["retain_eval_ids"] = list(data.retain_eval_ids)
    r = Reference(ref)
    retain_eval = [d.id for d in data.retain_eval]
    forget_ids = [d.id for d in data.forget]
    ref["points"] = r.points(forget_ids, retain_eval).to_json()
    para = {m: r.score(m, "forget", forget_ids).get("paraphrase") for m in GOLD}
    ref["paraphrase"] = {m: para[m] for m in GOLD} if all(para.values()) else None
    path.write_text(json.dumps(ref))
    return ref


def _models_hash(prepared: PreparedDir) -> str:
    return "-".join(model_hash(prepared.model(n)) for n in GOLD)


def _slim(stat: dict) -> dict:
    return {k: stat[k] for k in ("id", "token_acc", "token_logprobs", "extraction_strength")}


def evaluate_model(
    model,
    tok,
    *,
    forgotten: Sequence[Document],
    retain: Sequence[Document],
    pending: Sequence[Document] = (),
    holdout: Sequence[Document] = (),
    reference: Reference | None = None,
    t: int | None = None,
    T: int | None = None,
    probe: bool = True,
    batch_size: int = 16,
    progress: bool = False,
) -> dict:
    """Scores of ``model`` at step ``t`` (default: len(forgotten)) of a stream over a forget set of ``T``
    documents (default: the reference's forget set, else len(forgotten) + len(pending)).

    ``retain`` must be retain-eval (documents no unlearning step anchors on).  With a ``reference``:
    ``forget_degree_strict`` (and its paraphrase variant), ``forget_degree_retrain`` (against exact unlearning,
    where ``fit_unlearn.retrain`` built the reference, and at t = T), ``forget_degree_paper``, ``collateral_forget``,
    ``retain_utility`` and the capital probe against theta_0; a value that cannot be defined is None (e.g.
    strict F.D. for requests that are not prepared forget documents, collateral at t = T)."""
    forgotten, pending = list(forgotten), list(pending)
    t = len(forgotten) if t is None else t
    if T is None:
        T = len(reference.forget_ids) if reference is not None else len(forgotten) + len(pending)
    f_stats = doc_token_stats(model, tok, forgotten, batch_size=max(1, batch_size // 2)) if forgotten else []
    f = evaluate_split(
        model, tok, forgotten, batch_size=batch_size, progress=progress, token_stats=f_stats, paraphrases=True
    )
    pend = evaluate_split(model, tok, pending, batch_size=batch_size, progress=progress)
    r = evaluate_split(model, tok, retain, batch_size=batch_size, progress=progress)
    result: dict = {
        "t": t,
        "T": T,
        "forget": f.summary(),
        "pending": pend.summary() if pending else None,
        "forget_all": scores_from_items(f.items + pend.items) if forgotten or pending else None,
        "retain": r.summary(),
    }
    if forgotten:
        result["extraction_strength_forget"] = mean_extraction_strength(f_stats)
    if holdout and forgotten:
        hold_stats = doc_token_stats(model, tok, holdout, batch_size=max(1, batch_size // 2))
        result["mia_auc_forget_vs_holdout"] = mia_auc(f_stats, hold_stats)
        result["extraction_strength_holdout"] = mean_extraction_strength(hold_stats)
    probe_items = None
    if reference is not None:
        whole = result["forget_all"]["score"] if result["forget_all"] else None
        result.update(_against_reference(reference, f, pend, r, whole, forgotten, pending, retain, t, T))
        settings = reference.probe
        if probe and settings:
            pr = probe_accuracy(model, tok, capital_probes(settings["n"], settings.get("seed", 0)))
            probe_items = pr["items"]
            result["capital_probe"] = {
                "accuracy": pr["accuracy"],
                "theta0": settings["theta0"],
                "delta_vs_theta0": pr["accuracy"] - settings["theta0"],
                "n": pr["n"],
            }
    result["items"] = {"forget": f.items, "pending": pend.items, "retain": r.items}
    if probe_items is not None:
        result["items"]["capital_probe"] = probe_items
    return result


def _against_reference(ref: Reference, f, pend, r, whole, forgotten, pending, retain, t: int, T: int) -> dict:
    f_ids, p_ids, r_ids = [d.id for d in forgotten], [d.id for d in pending], [d.id for d in retain]
    known_f, known_p = ref.knows_forget(f_ids), ref.knows_forget(p_ids)
    out: dict = {
        "forget_degree_strict": None,
        "forget_degree_strict_paraphrase": None,
        "forget_degree_paper": None,
        "collateral_forget": None,
        "forget_degree_retrain": None,
        "forget_degree_retrain_paraphrase": None,
    }
    reference: dict = {}
    if forgotten and known_f:
        gold = {m: ref.score(m, "forget", f_ids) for m in ("theta0", "retain_only")}
        reference["forget_strict"] = {m: gold[m]["score"] for m in gold}
        # F's three parts: a set can reach the retain-only score with one part too low and another too high
        reference["forget_parts"] = {m: {k: gold[m][k] for k in PARTS} for m in gold}
        out["forget_degree_strict"] = closeness(f.score, gold["retain_only"]["score"])
        if f.paraphrase is not None and "paraphrase" in gold["retain_only"]:
            reference["forget_paraphrase"] = {m: gold[m]["paraphrase"]["score"] for m in gold}
            out["forget_degree_strict_paraphrase"] = closeness(
                f.paraphrase["score"], gold["retain_only"]["paraphrase"]["score"]
            )
        out["per_document"] = [
            {
                "id": it["id"],
                "score": doc_score(it),
                "retain_only": doc_score(g),
                "theta0": doc_score(g0),
            }
            for it, g, g0 in zip(
                f.items, ref.items("retain_only", "forget", f_ids), ref.items("theta0", "forget", f_ids), strict=True
            )
        ]
    if forgotten and known_f and (exact := ref.retrain_items(f_ids)) is not None:
        gold = scores_from_items(exact)
        reference["forget_retrain"] = gold["score"]
        out["forget_degree_retrain"] = closeness(f.score, gold["score"])
        if f.paraphrase is not None and "paraphrase" in gold:
            reference["forget_retrain_paraphrase"] = gold["paraphrase"]["score"]
            out["forget_degree_retrain_paraphrase"] = closeness(f.paraphrase["score"], gold["paraphrase"]["score"])
    if known_f and known_p and set(f_ids) | set(p_ids) == set(ref.forget_ids):  # the whole forget set only
        mix = ref.mixture(f_ids, p_ids)["score"]
        all_ids = f_ids + p_ids
        f0, fT = ref.score("theta0", "forget", all_ids)["score"], ref.score("retain_only", "forget", all_ids)["score"]
        reference["forget_paper"] = {"mixture": mix, "interpolated": reference_at(f0, fT, t, T)}
        out["forget_degree_paper"] = closeness(whole, mix)
    if pending and known_p:
        g0 = ref.score("theta0", "forget", p_ids)["score"]
        reference["collateral"] = {"theta0": g0}
        out["collateral_forget"] = closeness(pend.score, g0)
    if retain:
        pts = ReferencePoints(
            forget_0=float("nan"),
            retain_0=ref.score("theta0", "retain", r_ids)["score"],
            forget_T=float("nan"),
            retain_T=ref.score("retain_only", "retain", r_ids)["score"],
        )
        reference["retain"] = {
            "theta0": pts.retain_0,
            "retain_only": pts.retain_T,
            "at_t": reference_at(pts.retain_0, pts.retain_T, t, T),
        }
        out["retain_utility"] = retain_utility(r.score, pts, t, T)
    out["reference"] = reference
    return out


def evaluate_prepared(
    prepared: str | Path | PreparedDir,
    model: str | Path = "theta0",
    *,
    t: int | None = None,
    stream_seed: int | None = None,
    device: str = "cpu",
    dtype: str = "fp32",
    batch_size: int = 16,
    downstream: Sequence[str] | None = None,
    tasks_dir: str | Path | None = None,
    limit: int | None = None,
    progress: bool = False,
) -> dict:
    """Evaluate ``model`` (``theta0``, ``retain_only`` of ``prepared``, or a model directory) as step ``t`` of
    the stream over the prepared forget documents (default t = T: all of them), in ``stream_seed`` order
    (None: file order); what ``fit-unlearn eval`` writes.

    Adds the lm-eval ``downstream`` tasks (``tasks_dir``: extra local YAML tasks, ``limit``: items per task)
    when given, and the provenance (model and data hashes).  A t outside 1..T is refused before the model
    is loaded."""
    layout = PreparedDir.of(prepared)
    if not layout.has_data():
        raise ConfigError(
            f"{layout.root}: not a prepared directory; run `fit-unlearn prepare` first or pass --prepared"
        )
    splits = prepared_data(layout)
    path = layout.resolve_model(model)
    forget_docs = stream_order(splits.forget, stream_seed)
    T = len(forget_docs)
    t_eff = T if t is None else t
    if not 0 < t_eff <= T:
        raise ConfigError(f"--t must be in 1..{T} (the number of forget documents), got {t}")
    m, tok = load_model(path, device=device, dtype=dtype)
    res = evaluate_model(
        m,
        tok,
        forgotten=forget_docs[:t_eff],
        pending=forget_docs[t_eff:],
        retain=splits.retain_eval,
        holdout=splits.holdout,
        reference=Reference.load(layout),
        t=t_eff,
        T=T,
        batch_size=batch_size,
        progress=progress,
    )
    if downstream is not None:
        res["downstream"] = run_downstream(m, tok, list(downstream), include_path=tasks_dir, limit=limit)
    res["provenance"] = provenance(
        model=str(path),
        model_hash=model_hash(path),
        data_hash=splits.hash(),
        stream_seed=stream_seed,
        prepared=str(layout.root),
    )
    return res


__all__ = ["Reference", "build_reference", "evaluate_model", "evaluate_prepared", "scores_from_items"]
