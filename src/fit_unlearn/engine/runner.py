"""The engine: apply a stream of deletion requests exactly once, durably, with evaluation hooks.

    for request in stream:
        journal.append("received")                     # fsync
        plan = strategy.plan(request); apply_update(plan)
        journal.append("applied", record)
        every K items: checkpoint (temp dir + rename) + journal.append("checkpoint")
        every E requests: evaluate, journal.append("eval")

Resume = load the last checkpoint, mark what was applied after it as rolled back, continue from its
stream position.  Per-request randomness is derived from (seed, position), so a resumed run is
bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from fit_unlearn.data.documents import Document
from fit_unlearn.data.prepared import load_split, prepared_data
from fit_unlearn.engine import checkpoint as ckpt
from fit_unlearn.engine.adapters import Adapters, WithoutAdapters
from fit_unlearn.engine.config import RunConfig
from fit_unlearn.engine.distributed import check_supported, resolve_sharding
from fit_unlearn.engine.hooks import Evaluation, progress_postfix, write_results
from fit_unlearn.engine.journal import Journal
from fit_unlearn.engine.loop import Guard, NeighbourTargets, base_model_path, nonmember_level, stop_rule
from fit_unlearn.engine.rows import (
    EditedOutputRows,
    general_tokens,
    holder_count,
    own_tokens,
    prompt_keys,
    reuse_counted_tokens,
    token_documents,
    untie_embeddings,
)
from fit_unlearn.engine.streams import BadRequest, check_source, item_key, open_stream, validate_request
from fit_unlearn.engine.update import (
    ReferenceCache,
    StopRule,
    apply_update,
    common_tokens,
    edits_rows,
    forget_examples,
)
from fit_unlearn.errors import ConfigError, FitUnlearnError, JournalError, RequestError
from fit_unlearn.layers import trainable_params, unwrap
from fit_unlearn.layout import CheckpointDir, PreparedDir, RunDir
from fit_unlearn.models import load_model
from fit_unlearn.provenance import provenance

log = logging.getLogger(__name__)


def request_seed(seed: int, position: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{position}".encode()).digest()[:4], "little")


class Engine:
    """Continual unlearning engine (see module docstring).  ``Engine(cfg).run()`` or ``submit(doc)``."""

    def __init__(
        self,
        cfg: RunConfig,
        *,
        resume: bool = False,
        progress: bool = True,
        accelerator=None,
        on_event: Callable[[dict], None] | None = None,
        shard: str = "auto",
    ):
        self.cfg = cfg
        self.progress = progress
        self.on_event = on_event
        self.acc = accelerator
        self.is_main = accelerator is None or accelerator.is_main_process
        #: how the models are placed across ranks (engine/distributed.py): replicated, or sharded with FSDP2
        self.sharding = resolve_sharding(accelerator, shard)
        check_supported(cfg, self.sharding)
        self.out = Path(cfg.out)
        self.run_dir = RunDir(self.out)
        self.prepared = PreparedDir(cfg.prepared)
        self.strategy = cfg.strategy.build(cfg.device)
        self.strategy.row_edits = cfg.update.trainable == "rows"
        check_source(cfg.stream)  # a missing or empty request file is refused before anything is written
        self._preflight_paths()
        self._preflight_qa()
        #: loop.target: base / both: the base model's directory and weights hash, checked before anything is written
        self._base = (
            base_model_path(cfg.loop, self.prepared.recipe)
            if cfg.loop_enabled and cfg.loop.stop and cfg.loop.target in ("base", "both")
            else None
        )
        guard = cfg.loop.guard
        lora_merged = cfg.update.trainable == "lora" and cfg.update.lora.mode != "stack"
        if cfg.loop_enabled and guard.enabled and guard.scope == "update" and lora_merged:
            raise ConfigError(
                "loop.guard.scope: update cannot tell which weights a merged LoRA update changed; use "
                "update.lora.mode: stack (the repair trains the request's adapter) or loop.guard.scope: all"
            )
        self.data = prepared_data(self.prepared)  # with the recorded retain-train / retain-eval split
        self.split_digest = load_split(self.prepared).digest()
        self.hooks = Evaluation(self.prepared, self.data, cfg.eval, self.run_dir, self._device())
        self.model_path = self.prepared.resolve_model(cfg.model)
        self.model, self.tok = load_model(self.model_path, device=self._load_device(), dtype=cfg.dtype)
        if cfg.update.trainable == "rows" and cfg.update.rows.general_rank >= len(self.tok):
            raise ConfigError(
                f"update.rows.general_rank {cfg.update.rows.general_rank} leaves no token of the tokenizer's "
                f"{len(self.tok)} editable; set it below that (0: every token may be edited)"
            )
        if cfg.update.trainable == "rows" and cfg.update.rows.side == "both":  # refused before any work
            EditedOutputRows.require(unwrap(self.model).get_output_embeddings())
        self._preflight_disk()
        self.model = self.sharding.shard(self.model)
        self.ref_model = None
        self.update_cfg = cfg.update
        #: LoRA trainables (update.trainable: lora): one adapter per request, merged or stacked
        self.lora = Adapters(self.model, cfg.update.lora) if cfg.update.trainable == "lora" else None
        if self.sharding.sharded:  # ranks drawing different retain documents would hit the cache differently,
            # and a sharded reference's forward is a collective every rank must run: recompute instead
            self.update_cfg = cfg.update.model_copy(update={"reference_cache_mb": 0})
        self.ref_cache = ReferenceCache.for_config(self.update_cfg)  # theta_0 outputs, shared by all requests
        self.journal = Journal(self.run_dir.journal, writer=self.is_main)
        self.position = 0  # next stream position to process
        self.forgotten: list[Document] = []
        self.applied_ids: dict[str, int] = {}
        self.since_ckpt = 0
        #: a checkpoint was written by this engine (the other ranks' journal copies do not see the main's appends,
        #: and every rank must take the same branches: checkpoints and evaluations are collectives)
        self._checkpointed = False
        self.evals: list[dict] = []
        self._failed: str | None = None  #: set when an update raised part-way: no more work until resume
        #: closed loop (engine/loop.py): on for strategies that default to it unless the config says otherwise
        self.loop_on = cfg.loop_enabled
        #: the template tokens left unscored (update.template_max_df), from the non-forget documents
        self.common = (
            common_tokens(self.tok, self.data.retain_train + self.data.holdout, cfg.update.template_max_df)
            if cfg.update.template_max_df is not None
            else None
        )
        #: token-keyed edits (update.trainable: rows): which documents of the corpus contain each token; retain-eval
        #: is left out (it measures utility: the method must not see it)
        self.token_docs = (
            token_documents(
                self.tok, self.data.retain_train + self.data.holdout + self.data.forget, cfg.update.rows.match
            )
            if cfg.update.trainable == "rows"
            else None
        )
        if self.token_docs is not None:  # untied before a checkpoint's separate output matrix is restored into it
            untie_embeddings(self.model)
        #: tokens general text reads often, never edited (update.rows.general_rank and general_zipf; empty when off)
        rc = cfg.update.rows
        self.general_rows = (
            general_tokens(self.tok, rc.general_zipf, rc.general_lang, rc.general_rank)
            if self.token_docs is not None
            else frozenset()
        )
        #: rows.reuse_forgotten: the tokens a forgotten document still holds for the documents outside the index
        self.reuse_counted = (
            reuse_counted_tokens(self.tok, rc.reuse_zipf, rc.general_lang)
            if self.token_docs is not None and rc.reuse_forgotten and rc.reuse_zipf > 0
            else frozenset()
        )
        self._stop: StopRule | None = None
        self._neighbours: NeighbourTargets | None = None  #: loop.neighbours: each request's target
        #: loop.target: base / both: the base model theta_0 was fine-tuned from (loaded with the loop's calibration)
        self.base_model = None
        self.guard: Guard | None = None
        self.anchors = self.data.retain_train
        if self.loop_on and cfg.loop.guard.enabled:
            self.guard = Guard(
                cfg.loop.guard,
                self.data.retain_train,
                self.tok,
                cfg.update,
                cfg.loop.lr,
                per_sequence=self.token_docs is not None,
            )
            # the probe must see what the update does to documents it never trains on: not an anchor
            self.anchors = [d for d in self.data.retain_train if d.id not in self.guard.probe_ids]
        self.consumed: Counter = Counter()  #: stream items processed, by identity (saved with checkpoints)
        #: items the last checkpoint holds, still to be skipped when the restarted stream delivers them again
        self._redelivered: Counter | None = Counter()
        self._position_skip = 0
        self._setup_journal(resume)

    # ---- set-up ----------------------------------------------------------------------------------
    def _device(self) -> str:
        if self.acc is not None:
            return str(self.acc.device)
        return self.cfg.device

    def _load_device(self) -> str:
        return self.sharding.load_device or self._device()

    def _preflight_paths(self) -> None:
        prepared = self.prepared.root
        if not self.prepared.is_prepared():
            raise ConfigError(
                f"prepared: {prepared} is not a prepared directory (run `fit-unlearn prepare` "
                "first, or set prepared: to its --out)"
            )
        if self.is_main:
            try:
                self.out.mkdir(parents=True, exist_ok=True)
                probe = self.out / f".write-test-{os.getpid()}"
                probe.write_text("ok")
                probe.unlink()
            except OSError as e:
                raise ConfigError(f"out: cannot write to {self.out} ({e.strerror}); choose a writable --out") from None

    def _preflight_qa(self) -> None:
        """Requests carry QA pairs only where theta_0 was trained on them (``prepare --no-qa`` trains on
        documents alone)."""
        try:
            trained_on_qa = json.loads(self.prepared.recipe.read_text()).get("train_on_qa", True)
        except (OSError, ValueError):
            return
        if self.cfg.strategy.include_qa and not trained_on_qa:
            raise ConfigError(
                f"strategy.include_qa: {self.prepared.root} was prepared with --no-qa (theta_0 never saw the QA "
                "pairs), so requests cannot unlearn them; set strategy.include_qa: false"
            )

    def _preflight_disk(self) -> None:
        need = 2 * sum(p.numel() * p.element_size() for p in self.model.parameters())
        free = shutil.disk_usage(self.out).free
        if free < need:
            raise ConfigError(
                f"out: {self.out} has {free / 2**30:.2f} GiB free, checkpoints need about "
                f"{need / 2**30:.2f} GiB; free space or choose another --out"
            )

    def _needs_reference(self) -> bool:
        guard_kl = self.loop_on and self.cfg.loop.guard.enabled and self.cfg.loop.guard.loss == "kl"
        return guard_kl or any(o.spec.needs_reference for o in self.strategy.objectives)

    def _reference(self):
        if self.ref_model is None and self._needs_reference() and self.lora is not None and self.lora.stacked:
            self.ref_model = WithoutAdapters(self.model, self.lora)  # theta_0 is the model, adapters off
        if self.ref_model is None and self._needs_reference():
            device = self.cfg.update.reference_device or self._load_device()
            self.ref_model, _ = load_model(self.model_path, device=device, dtype=self.cfg.dtype)
            for p in self.ref_model.parameters():
                p.requires_grad_(False)
            self.ref_model = self.sharding.shard(self.ref_model)
        return self.ref_model

    def _setup_journal(self, resume: bool) -> None:
        """Validate the journal (main process), then restore the last checkpoint (every process)."""
        if self.is_main:
            self._validate_journal(resume)
        if self.acc is not None:
            self.acc.wait_for_everyone()
            if not self.is_main:
                self.journal = Journal(self.run_dir.journal, writer=False)
        if resume:
            self._restore()
            uncommitted = self.journal.uncommitted()
            for e in uncommitted:
                self._log("rolled_back", id=e["id"], position=e["position"], reason="applied after the last checkpoint")
            self._log("resume", position=self.position, committed=len(self.applied_ids))
            self._replay_submitted(uncommitted)
            if self.acc is not None:
                self.acc.wait_for_everyone()

    def _validate_journal(self, resume: bool) -> None:
        start = self.journal.start
        if start is None:
            if resume and self.journal.events:
                raise JournalError(f"{self.journal.path}: journal has no start record; cannot resume")
            self._log(
                "start",
                config_hash=self.cfg.hash(),
                config=self.cfg.model_dump(mode="json"),
                provenance=provenance(model=str(self.model_path), data_hash=self.data.hash()),
                retain_split=self.split_digest,
            )
            return
        if not resume:
            n = len(self.journal.applied_counts())
            raise JournalError(
                f"{self.out} already holds a run ({n} requests applied); pass --resume to continue "
                "it, or choose another --out"
            )
        diff = [] if start["config_hash"] == self.cfg.hash() else self.cfg.diff(start["config"])
        if diff:
            raise JournalError(
                f"cannot resume {self.out}: the configuration differs from the journal's in "
                f"{', '.join(diff)}; resume with the original configuration or start a new --out"
            )
        if "retain_split" not in start:
            raise JournalError(
                f"cannot resume {self.out}: it was journaled before the retain-train / retain-eval split (its "
                "anchors and scores mix retain items); start a new --out"
            )
        if start["retain_split"] != self.split_digest:
            raise JournalError(
                f"cannot resume {self.out}: the prepared directory's retain-train / retain-eval split changed "
                "since the run started; restore its split.json or start a new --out"
            )
        ck = self.journal.last_checkpoint()
        if ck is not None and (why := ckpt.verify(Path(ck["path"]), ck.get("digest"))) is not None:
            raise JournalError(
                f"{ck['path']}: the journal's last checkpoint is {why}; cannot resume from it (restore the "
                "directory from a backup, or start a new --out)"
            )

    def _restore(self) -> None:
        ck = self.journal.last_checkpoint()
        if ck is None:
            return
        path = Path(ck["path"])
        state = ckpt.load_checkpoint_state(path)
        if self.lora is not None and self.lora.stacked:  # theta_0 (as loaded) + the checkpoint's adapters
            self.lora.load(CheckpointDir(path).adapters)
        else:
            loaded, _ = load_model(CheckpointDir(path).model, device=self._load_device(), dtype=self.cfg.dtype)
            self.sharding.load_full_state_dict(self.model, unwrap(loaded).state_dict())
            del loaded
        self.strategy.load_state(CheckpointDir(path).strategy)
        ckpt.set_rng_state(state["rng"])
        self.position = state["position"]
        self.forgotten = [Document.from_json(d) for d in state["forgotten"]]
        self.applied_ids = dict(state["applied_ids"])
        if "consumed" in state:
            self.consumed = Counter(state["consumed"])
            self._redelivered = Counter(state["consumed"])
        else:  # an older checkpoint: its stream items are the first ``position`` ones
            self._redelivered, self._position_skip = None, self.position
        self.evals = [e for e in self.journal.events if e["event"] == "eval" and e["t"] <= len(self.forgotten)]

    # ---- journal / events ------------------------------------------------------------------------
    def _log(self, event: str, **fields) -> None:
        if self.is_main:
            rec = self.journal.append(event, **fields)
            if self.on_event:
                self.on_event(rec)

    # ---- the stream ------------------------------------------------------------------------------
    def stream(self) -> Iterator[tuple[int, Document | BadRequest]]:
        """The configured stream: (position, request or bad request), at most ``stream.limit`` items."""
        return open_stream(self.cfg.stream, self.data.forget)

    def stream_length(self) -> int:
        """T of the references: the number of forget documents in the prepared set (or ``eval.T``), never
        the length of a partial run (``stream.limit``)."""
        return self.hooks.T

    # ---- applying requests -----------------------------------------------------------------------
    def submit(self, request: Document) -> dict:
        """Apply one request now (Python API) and return its record.  An id already applied is refused
        (idempotent submit).

        Durable on return: the request itself is journaled (fsync'd) before its update starts and its
        ``applied`` event when the update ends, so once ``submit`` returns, a crash cannot lose it:
        ``Engine(cfg, resume=True)`` restores the last checkpoint and applies again, from the journal, every
        submitted request applied after it, in order and bit-identically.  A request whose ``submit`` raised
        (or had not returned when the process died) is not applied on resume: submit it again."""
        self._check_consistent()
        validate_request(request, self.cfg.stream.max_request_chars)
        self._evaluate_if_due()
        if self.strategy.needs_calibration:
            self._calibrate()
        self._calibrate_loop()
        rec = self._process(self.position, request, journal_request=True)
        self.position += 1
        self._after_item()
        return rec

    def _check_consistent(self) -> None:
        if self._failed is not None:
            raise JournalError(
                f"{self._failed}; the model may hold part of that update, so this engine accepts no more "
                f"work: resume the run (Engine(cfg, resume=True), or `fit-unlearn run --resume --out {self.out}`) "
                "to continue from the last checkpoint"
            )

    def _replay_submitted(self, rolled_back: list[dict]) -> None:
        """On resume: apply again, in order, the submitted requests whose applications the crash lost."""
        payloads = {
            (e["id"], e["position"]): e["request"]
            for e in self.journal.events
            if e["event"] == "received" and "request" in e
        }
        for e in rolled_back:
            doc = payloads.get((e["id"], e["position"]))
            if doc is None:  # a stream item: the stream delivers it again
                continue
            if self.strategy.needs_calibration:  # as submit() did: the strategy's and the loop's calibrations
                self._calibrate()
            self._calibrate_loop()  # read back from the journal (the target, the guard's baseline, the base model)
            self._process(e["position"], Document.from_json(doc), journal_request=True)  # same position, same seed
            self.position = e["position"] + 1
            self._after_item()

    def step(self, item: Document | BadRequest) -> dict | None:
        """Take one stream item: skip it (None) if the last checkpoint already holds it, a restart having
        delivered it again; otherwise process it at the next position, then checkpoint / evaluate when due.
        Progress is kept by item identity (:func:`~fit_unlearn.engine.streams.item_key`), not by position."""
        key = item_key(item)
        if self._redelivered is None:  # resumed from a checkpoint written before identities were kept
            if self._position_skip > 0:
                self._position_skip -= 1
                return None
        elif self._redelivered.get(key, 0) > 0:
            self._redelivered[key] -= 1
            return None
        rec = self._process(self.position, item)  # raises on a bad request with on_bad_request=stop
        self.consumed[key] += 1
        self.position += 1
        self._after_item()
        return rec

    def _process(self, position: int, request: Document | BadRequest, journal_request: bool = False) -> dict:
        if isinstance(request, Document) and request.id in self.applied_ids:
            request = BadRequest(
                f"request id {request.id!r} was already applied (stream position "
                f"{self.applied_ids[request.id]}); not applied again",
                request.id,
            )
        if isinstance(request, BadRequest):
            self._log("rejected", position=position, id=request.id, reason=request.reason)
            if self.cfg.stream.on_bad_request == "stop":
                self.checkpoint()
                raise RequestError(
                    f"{request.reason} (stopped: stream.on_bad_request=stop; fix the request or use "
                    "--on-bad-request skip, then --resume)"
                )
            return {"rejected": request.reason}
        payload = {"request": request.to_json()} if journal_request else {}
        self._log("received", id=request.id, hash=request.content_hash, position=position, **payload)
        try:
            return self._apply(position, request)
        except BaseException as e:  # an error (not a crash) part-way through: the model is not consistent
            self._failed = f"the update of request {request.id!r} (position {position}) failed: {type(e).__name__}: {e}"
            self._log("failed", id=request.id, position=position, error=f"{type(e).__name__}: {e}")
            raise

    def _apply(self, position: int, request: Document) -> dict:
        request = request.training_view()  # evaluation-only paraphrases never reach a strategy or an update
        seed = request_seed(self.cfg.seed, position)
        torch.manual_seed(seed)
        t0 = time.perf_counter()
        plan = self.strategy.plan(request, self.model, self.tok)
        t_plan = time.perf_counter() - t0
        if plan.text is None:
            record = {"redundant": True, "receipt": plan.receipt, "seconds_plan": t_plan}
            self._log("redundant", id=request.id, position=position, record=record)
        else:
            rows = shared = targeted = None
            if self.token_docs is not None:  # token-keyed edits: the request's own tokens (docs/rows.md)
                rc = self.update_cfg.rows
                widen = rc.min_rows if rc.fallback == "rarest" else 0
                rows, shared = own_tokens(
                    self.tok,
                    request.id,
                    plan.text,
                    plan.qa,
                    self.token_docs,
                    rc.max_df,
                    widen,
                    self.general_rows,
                    self.applied_ids if rc.reuse_forgotten else (),
                    self.reuse_counted,
                    rc.reuse_max_df,
                )
                covered = None
                if rc.cover_prompts and rows:  # questions read wholly in shared words: their rarest word too
                    holders = holder_count(
                        request.id,
                        self.token_docs,
                        self.applied_ids if rc.reuse_forgotten else (),
                        self.reuse_counted,
                        rc.reuse_max_df,
                    )
                    covered = prompt_keys(
                        self.tok, plan.qa, rows, holders, self.general_rows, rc.cover_max_df, rc.cover_min
                    )
                    rows = sorted({*rows, *(c["token"] for c in covered)})
                t1 = time.perf_counter()
                if edits_rows(self.update_cfg, rows):
                    examples = forget_examples(self.tok, plan.text, plan.qa, self.update_cfg, self.common)[1]
                    rows, targeted = self.strategy.target_rows(rows, examples, self.model, self.tok, least=rc.min_rows)
                else:  # a weight update instead (rows.fallback): the strategy chooses its weights now
                    self.strategy.plan_weights(plan, self.model, self.tok)
                t_plan += time.perf_counter() - t1  # T over rows (or layers) is part of the planning
                if targeted is not None:
                    plan.receipt["seconds"]["attribution"] = targeted["seconds"]

            def update(rows, stop) -> dict:
                return apply_update(
                    self.model,
                    self._reference(),
                    self.tok,
                    plan,
                    self.anchors,  # retain-train only (R is scored on retain-eval), less the guard's probe
                    self.update_cfg,
                    seed,
                    accelerator=self.acc,
                    ref_cache=self.ref_cache,
                    stop=stop,
                    common=self.common,
                    adapters=self.lora,
                    adapter_name=f"req{position:06d}",
                    rows=rows,
                )

            stop, near = self._stop if self.cfg.loop.stop else None, None
            if stop is not None and self._neighbours is not None:  # this request's own non-member level
                level, near = self._neighbours.target(request.text)
                stop = replace(stop, target=level)
            record = update(rows, stop)
            if near is not None and "loop" in record:
                record["loop"]["neighbours"] = near
            if "rows" in record:  # absent when the update had nothing to train on (skipped)
                record["rows"]["shared_with"] = shared
                if covered is not None:
                    record["rows"]["covered"] = covered
                if targeted is not None:  # FIT's T under row edits: which own rows it kept
                    record["rows"]["targeted"] = targeted
                record["rows"]["widened"] = (
                    shared > self.update_cfg.rows.max_df
                )  # other documents holding an edited token, at most
            rows_only = bool(record.get("rows", {}).get("edited"))
            if rows_only and self._escalates(record):  # the rows fell short: the rest as a weight update
                t1 = time.perf_counter()
                self.strategy.plan_weights(plan, self.model, self.tok)
                t_plan += time.perf_counter() - t1
                record["escalated"] = update(None, replace(stop, max_steps=self.update_cfg.rows.escalate_steps))
                record["escalated"]["objective"] = plan.objective.name
                record["seconds"] = record.get("seconds", 0.0) + record["escalated"].get("seconds", 0.0)
                rows_only = False
            if self.guard is not None:  # stacked adapters: the repair trains the request's adapter only
                params = self._repairable(plan, record)
                record["guard"] = self.guard.check(
                    self.model,
                    self._reference(),
                    self.tok,
                    seed,
                    self.ref_cache,
                    params=params,
                    repair=self.token_docs is None or not rows_only,
                    # rows.side both: every probe sequence's logits moved (the edited tokens' columns)
                    rows=record["rows"]["tokens"] if rows_only and self.update_cfg.rows.side == "input" else None,
                )
            if len(record.get("losses", [])) > 64:  # keep journal lines small for long requests
                record["losses"] = record["losses"][:: len(record["losses"]) // 64 + 1]
            record.update({"receipt": plan.receipt, "seconds_plan": t_plan})
            self._log("applied", id=request.id, position=position, record=record)
        self.strategy.after_update(request, plan, self.model, self.tok)
        self.forgotten.append(request)
        self.applied_ids[request.id] = position
        return record

    def _escalates(self, record: dict) -> bool:
        """Whether a row edit that ended short of its target goes on as a weight update (``rows.escalate_steps``)."""
        loop = record.get("loop") or {}
        return bool(
            self.update_cfg.rows.escalate_steps
            and self._stop is not None
            and self.cfg.loop.stop
            and loop.get("stopped") in ("budget", "stalled")
        )

    def _repairable(self, plan, record: dict):
        """The weights the guard may repair after a request (None: all of the model's): a stacked request's own
        adapter, or with ``guard.scope: update`` the weights its update trained."""
        if self.lora is not None and self.lora.stacked:
            return self.lora.params(record["adapter"])
        if self.cfg.loop.guard.scope == "update":  # merged LoRA updates are refused with it (__init__)
            return trainable_params(self.model, plan.trainable)
        return None

    def _after_item(self) -> None:
        self.since_ckpt += 1
        if self.since_ckpt >= self.cfg.checkpoint.every:
            self.checkpoint()
        self._evaluate_if_due()

    def _evaluate_if_due(self) -> None:
        """Evaluate at t when t is a multiple of ``eval.every`` and t has no evaluation yet: after an item,
        and on resume, where a crash during the evaluation that followed the checkpoint at t lost it."""
        t = len(self.forgotten)
        if self.cfg.eval.due(t) and (not self.evals or self.evals[-1]["t"] != t):
            self.evaluate()

    def checkpoint(self) -> Path | None:
        self._check_consistent()
        if self.since_ckpt == 0 and (self._checkpointed or self.journal.last_checkpoint() is not None):
            return None
        path = None
        full = self.sharding.full_state_dict(self.model)  # sharded: gathered by every rank, held by the main one
        if self.is_main:
            state = {
                "forgotten": [d.to_json() for d in self.forgotten],
                "applied_ids": self.applied_ids,
                "consumed": dict(self.consumed),  # stream items taken so far, by identity
                "config_hash": self.cfg.hash(),
            }
            path, digest = ckpt.save_checkpoint(
                self.run_dir,
                self.position,
                self.model,
                self.tok,
                self.strategy,
                state,
                state_dict=full,
                adapters=self.lora,
            )
            self._log("checkpoint", position=self.position, path=str(path), t=len(self.forgotten), digest=digest)
            ckpt.prune(self.run_dir, self.cfg.checkpoint.keep, protect=path)  # only once the journal points here
        if self.acc is not None:
            self.acc.wait_for_everyone()
        self.since_ckpt = 0
        self._checkpointed = True
        return path

    def evaluate(self) -> dict | None:
        """Evaluate the current model at t = requests applied so far (main process); journal the summary.
        Sharded, every rank runs the evaluation's forwards (each one is a collective) and only the main process
        writes; the others return None."""
        t = len(self.forgotten)
        res = None
        if t and (self.is_main or self.sharding.sharded):
            summary, res = self.hooks.evaluate(
                self.model, self.tok, self.forgotten, self.applied_ids, write=self.is_main
            )
            if self.is_main:
                self.evals.append({"event": "eval", **summary})
                self._log("eval", **summary)
            else:
                res = None
        if t and not self.is_main:  # every rank knows which t were evaluated: the same evaluations are due on all
            self.evals.append({"event": "eval", "t": t})
        if self.acc is not None:
            self.acc.wait_for_everyone()
        return res

    def run(self, stream: Iterator | None = None) -> dict:
        """Consume the configured stream (or ``stream``) to the end; returns the results summary."""
        self._check_consistent()
        self._evaluate_if_due()  # a resumed run whose last checkpoint's evaluation was lost in a crash
        if self.strategy.needs_calibration:
            self._calibrate()
        self._calibrate_loop()
        items = stream if stream is not None else self.stream()
        total = None
        if self.cfg.stream.source == "forget":
            total = min(len(self.data.forget), self.cfg.stream.limit or len(self.data.forget))
        bar = tqdm(
            total=total,
            initial=self.position,
            desc="requests",
            unit="req",
            disable=not (self.progress and self.is_main),
        )
        try:
            for _, item in items:
                if self.step(item) is None:
                    continue
                bar.update(1)
                if (postfix := progress_postfix(self.evals)) is not None:
                    bar.set_postfix(postfix)
        finally:
            bar.close()
        self.checkpoint()
        if self.cfg.eval.at_end and self.forgotten and (not self.evals or self.evals[-1]["t"] != len(self.forgotten)):
            self.evaluate()
        if self.cfg.eval.attacks and self.is_main and self.forgotten:
            self.run_attacks()
        return self.write_results()

    def run_attacks(self) -> dict:
        """The configured recovery attacks on the final model; results land in results.json."""
        final = CheckpointDir(self.journal.last_checkpoint()["path"]).model
        out = self.hooks.attacks(
            final,
            self.forgotten,
            dtype=self.cfg.dtype,
            seed=self.cfg.seed,
            progress=self.progress,
            embeddings=self.cfg.quantize_embeddings,
        )
        self.attacks = out
        self._log("attacks", summary={k: v.get("recovery") for k, v in out.items()})
        return out

    def _calibrate_loop(self) -> None:
        """Closed loop: the non-member target and the guard's probe baseline, measured on the initial model
        (theta_0) before the first request and journaled; a resumed run reads them back.  ``loop.target: base``
        (or ``both``) also loads the base model (every time: it is not part of a checkpoint)."""
        if not self.loop_on:
            return
        if self._base is not None and self.base_model is None:  # first, so that a bad base model changes nothing
            self.base_model = self._load_base()
        if self._stop is not None:
            return
        done = next((e for e in self.journal.events if e["event"] == "loop_calibrated"), None)
        if done is None:
            t0 = time.perf_counter()
            initial = self._reference() or self.model
            if len(self.forgotten):
                raise JournalError(f"{self.out}: requests were applied before the closed loop was calibrated")
            level = nonmember_level(
                initial,
                self.tok,
                self.data.holdout,
                self.strategy.include_qa,
                self.cfg.update,
                self.cfg.loop.quantile,
                self.common,
                self.cfg.loop.cap_quantile,
            )
            guard = self.guard.calibrate(initial, self.tok) if self.guard else None
            target = {"target_from": "holdout"}
            if self._base is not None:
                target = {
                    "target_from": self.cfg.loop.target,
                    "base_model": str(self._base[0]),
                    "base_model_hash": self._base[1],
                }
            self._log("loop_calibrated", level=level, guard=guard, **target, seconds=time.perf_counter() - t0)
            done = {"level": level, "guard": guard}
        elif self.guard is not None:
            self.guard.baseline = done["guard"]["probe_loss"]
        self._stop = replace(stop_rule(done["level"], self.cfg.loop), target_model=self.base_model)
        if self.cfg.loop.neighbours is not None and self.cfg.loop.target != "base":
            self._neighbours = NeighbourTargets(
                self.data.holdout, done["level"]["losses"], self.cfg.loop.neighbours, self.cfg.loop.quantile
            )

    def _load_base(self):
        path = self._base[0]
        model, tok = load_model(path, device=self._load_device(), dtype=self.cfg.dtype)
        if tok.get_vocab() != self.tok.get_vocab():
            raise ConfigError(
                f"loop.base_model {path}: its tokenizer is not the unlearned model's; give the base model theta_0 was "
                "fine-tuned from"
            )
        for p in model.parameters():
            p.requires_grad_(False)
        return model

    def _calibrate(self) -> None:
        """Calibrate the strategy before the stream: FIT's importance thresholds on the first requests of
        the stream, and its per-layer retain profile (``layers.relative``) on retain documents."""
        t0 = time.perf_counter()
        n = self.strategy.calibration_size
        texts = []
        for _, item in self.stream() if n else ():
            if isinstance(item, Document):
                texts.append(item.text)
            if len(texts) >= n:
                break
        if n and not texts:
            raise ConfigError("calibration needs at least one valid request in the stream")
        info = self.strategy.calibrate(
            texts, self.model, self.tok, retain_texts=[d.text for d in self.data.retain_train]
        )
        self._log("calibrated", **info, seconds=time.perf_counter() - t0)  # a one-off cost of the stream

    def write_results(self) -> dict:
        ck = self.journal.last_checkpoint()
        results = {
            "config": self.cfg.model_dump(mode="json"),
            "provenance": provenance(model=str(self.model_path), data_hash=self.data.hash(), seed=self.cfg.seed),
            "final_model": str(CheckpointDir(ck["path"]).model) if ck else None,
            "requests": list(
                {
                    e["id"]: {"id": e["id"], "position": e["position"], "event": e["event"], **e.get("record", {})}
                    for e in self.journal.events
                    if e["event"] in ("applied", "redundant") and e["id"] in self.applied_ids
                }.values()
            ),
            "rejected": [e for e in self.journal.events if e["event"] == "rejected"],
            "evals": self.evals,
            "attacks": getattr(self, "attacks", None),
            "applied_counts": self.journal.applied_counts(),
        }
        if self.is_main:
            write_results(self.run_dir, results)
        return results

    def close(self) -> None:
        self.journal.close()


__all__ = ["Engine", "FitUnlearnError", "request_seed"]
