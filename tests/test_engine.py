"""The continual engine: journal, checkpoints, exactly-once resume, bad requests, config validation."""

import hashlib
import json
import re
from pathlib import Path

import pytest
import torch

from fit_unlearn.data.documents import Document
from fit_unlearn.engine import Engine, Journal, load_config
from fit_unlearn.engine.config import RunConfig, build_config
from fit_unlearn.engine.journal import request_events
from fit_unlearn.errors import ConfigError, JournalError, RequestError


def _cfg(prepared, out, **over):
    base = {
        "prepared": str(prepared),
        "out": str(out),
        "stream": {"order_seed": 3, "limit": 6},
        "strategy": {"objective": "npo"},
        "update": {"lr": 1e-3, "epochs": 1, "retain_batch_size": 1},
        "eval": {"every": 3, "batch_size": 8},
        "checkpoint": {"every": 2},
    }
    for k, v in over.items():
        node = base
        *ps, leaf = k.split(".")
        for p in ps:
            node = node.setdefault(p, {})
        node[leaf] = v
    return build_config(base)


def _weights(path):
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def _crash_after(engine, stop: int) -> None:
    """Take stream items until the engine's position reaches ``stop``, then die without closing anything."""
    for _, item in engine.stream():
        if engine.position == stop:
            break
        engine.step(item)


def test_run_applies_each_request_once_and_evaluates(tiny_prepared, tmp_path):
    eng = Engine(_cfg(tiny_prepared, tmp_path / "run"), progress=False)
    res = eng.run()
    eng.close()
    assert len(res["requests"]) == 6
    assert set(res["applied_counts"].values()) == {1}
    assert [e["t"] for e in res["evals"]] == [3, 6]
    assert all(0 <= e["forget_degree_strict"] <= 1 and 0 <= e["retain_utility"] <= 1 for e in res["evals"])
    rec = res["requests"][0]
    assert rec["steps"] > 0 and rec["params_touched"] > 0 and rec["seconds"] > 0
    assert rec["loss_first"] is not None
    j = Journal(tmp_path / "run" / "journal.jsonl", writer=False)
    assert sum(e["event"] == "checkpoint" for e in j.events) == 3
    assert (tmp_path / "run" / "results.json").exists()


def test_resume_after_crash_is_identical_to_uninterrupted(tiny_prepared, tmp_path):
    full = Engine(_cfg(tiny_prepared, tmp_path / "full"), progress=False)
    res_full = full.run()
    full.close()

    # crash: process 5 of 6 items (checkpoint after 4), then die: nothing is closed or flushed by hand
    crashed = Engine(_cfg(tiny_prepared, tmp_path / "crash"), progress=False)
    _crash_after(crashed, 5)
    del crashed

    resumed = Engine(_cfg(tiny_prepared, tmp_path / "crash"), resume=True, progress=False)
    assert resumed.position == 4 and len(resumed.forgotten) == 4
    res = resumed.run()
    resumed.close()
    j = Journal(tmp_path / "crash" / "journal.jsonl", writer=False)
    rolled = [e["position"] for e in j.events if e["event"] == "rolled_back"]
    assert rolled == [4]  # exactly the item applied after the last checkpoint
    assert j.applied_counts() == res_full["applied_counts"] and set(j.applied_counts().values()) == {1}
    assert [r["position"] for r in res["requests"]] == list(range(6))
    wa = _weights(tmp_path / "full" / "checkpoints" / "ckpt-000006" / "model")
    wb = _weights(tmp_path / "crash" / "checkpoints" / "ckpt-000006" / "model")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    # every evaluation, the one at t=3 from before the crash included, equals the uninterrupted run's

    def strip(e):
        return {k: v for k, v in e.items() if k not in ("time", "seconds")}  # wall-clock times

    assert [strip(e) for e in res["evals"]] == [strip(e) for e in res_full["evals"]]
    assert [e["t"] for e in res["evals"]] == [3, 6]


def test_existing_run_needs_resume_and_same_config(tiny_prepared, tmp_path):
    eng = Engine(_cfg(tiny_prepared, tmp_path / "r", **{"stream.limit": 2}), progress=False)
    eng.run()
    eng.close()
    with pytest.raises(JournalError, match="pass --resume"):
        Engine(_cfg(tiny_prepared, tmp_path / "r", **{"stream.limit": 2}), progress=False)
    with pytest.raises(JournalError, match="strategy.objective"):
        Engine(
            _cfg(tiny_prepared, tmp_path / "r", **{"stream.limit": 2, "strategy.objective": "ga"}),
            resume=True,
            progress=False,
        )


def _requests(tmp_path, lines):
    p = tmp_path / "req.jsonl"
    p.write_bytes(b"\n".join(lines) + b"\n")
    return p


GOOD = b'{"id": "r1", "text": "Name: Ada Q. Vell\\n\\nAge: 33"}'


def test_request_file_with_a_byte_order_mark(tmp_path):
    """A request file that starts with a UTF-8 byte-order mark is valid: its first request is read."""
    from fit_unlearn.data.documents import Document
    from fit_unlearn.engine.config import StreamConfig
    from fit_unlearn.engine.streams import open_stream

    path = _requests(tmp_path, [b"\xef\xbb\xbf" + GOOD, b'{"id": "r2", "text": "caf\xc3\xa9"}'])
    items = list(open_stream(StreamConfig(source=str(path)), []))
    assert [pos for pos, _ in items] == [0, 1]
    assert [d.reason for _, d in items if not isinstance(d, Document)] == []
    assert [(d.id, d.text) for _, d in items] == [("r1", "Name: Ada Q. Vell\n\nAge: 33"), ("r2", "caf\u00e9")]


@pytest.mark.parametrize(
    "line,msg",
    [
        (b'{"id": "r2", "text": ""}', "empty or whitespace-only"),
        (b'{"id": "r2", "text": "   \\n "}', "empty or whitespace-only"),
        (b'{"id": "r2", "text": "caf\xe9"}', "not valid UTF-8"),
        (b'{"id": "r2", "text": ' + b'"' + b"a" * 300 + b'"}', "over the limit of 200"),
        (b'{"id": "r2", "text": ', r"req\.jsonl:2: not valid JSON"),
        (b'{"id": "r1", "text": "again"}', "already applied"),
    ],
)
def test_bad_requests_stop_or_skip(tiny_prepared, tmp_path, line, msg):
    path = _requests(tmp_path, [GOOD, line, b'{"id": "r3", "text": "Title: X\\n\\nCategory: Y"}'])
    over = {"stream.source": str(path), "stream.limit": None, "stream.max_request_chars": 200}
    eng = Engine(_cfg(tiny_prepared, tmp_path / "stop", **over), progress=False)
    with pytest.raises(RequestError, match=msg):
        eng.run()
    eng.close()
    j = Journal(tmp_path / "stop" / "journal.jsonl", writer=False)
    assert j.committed_ids() == {"r1": 0}  # work done before the bad line is checkpointed, not lost
    eng = Engine(_cfg(tiny_prepared, tmp_path / "skip", **over, **{"stream.on_bad_request": "skip"}), progress=False)
    res = eng.run()
    eng.close()
    assert [r["id"] for r in res["requests"]] == ["r1", "r3"]
    assert msg.split(":")[-1].strip().replace("\\", "") in res["rejected"][0]["reason"].replace("\\", "")


@pytest.mark.parametrize("content", [b"", b"  \n\t\n\n", b"\xef\xbb\xbf\n"])
def test_a_request_file_without_requests_is_refused_before_any_work(tiny_prepared, tmp_path, content):
    """An empty or whitespace-only request file is a mistake, not a stream of 0 requests: refused (by
    open_stream and by Engine) with the file and the fix, before a journal or a checkpoint is written."""
    from fit_unlearn.engine.config import StreamConfig
    from fit_unlearn.engine.streams import open_stream
    from fit_unlearn.errors import DataError

    path = tmp_path / "req.jsonl"
    path.write_bytes(content)
    msg = re.escape(f"{path}: request file holds no requests (empty or whitespace-only); write one JSON object")
    out = tmp_path / "run"
    with pytest.raises(DataError, match=msg):
        eng = Engine(_cfg(tiny_prepared, out, **{"stream.source": str(path), "stream.limit": None}), progress=False)
        eng.run()
    assert not (out / "journal.jsonl").exists() and not (out / "checkpoints").exists()
    with pytest.raises(DataError, match=msg):
        open_stream(StreamConfig(source=str(path)), [])


def test_outside_requests_have_no_forget_degree_and_the_progress_bar_copes(tiny_prepared, tmp_path):
    """Requests that are not prepared forget documents (e.g. a malicious stream): F.D. is undefined (None),
    R.U. is still measured, and the progress bar (progress=True) shows n/a instead of crashing."""
    path = _requests(tmp_path, [GOOD, b'{"id": "r2", "text": "the of and to a in is it you that he was"}'])
    eng = Engine(
        _cfg(tiny_prepared, tmp_path / "out", **{"stream.source": str(path), "stream.limit": None, "eval.every": 2}),
        progress=True,
    )
    res = eng.run()
    eng.close()
    assert res["evals"][-1]["t"] == 2 and res["evals"][-1]["forget_degree_strict"] is None
    assert 0 <= res["evals"][-1]["retain_utility"] <= 1


def test_submit_is_idempotent(tiny_prepared, tmp_path):
    from fit_unlearn.data.documents import Document

    eng = Engine(_cfg(tiny_prepared, tmp_path / "api", **{"eval.every": None}), progress=False)
    rec = eng.submit(Document("x1", "Name: Pim R. Oak\n\nAge: 50"))
    assert rec["steps"] > 0
    with pytest.raises(RequestError, match="already applied"):
        eng.submit(Document("x1", "Name: Pim R. Oak\n\nAge: 50"))
    with pytest.raises(RequestError, match="empty"):
        eng.submit(Document("x2", "  "))
    eng.close()


def test_config_errors_name_field_and_choices(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'npo'.*known objectives"):
        build_config({"strategy": {"objective": "nop"}})
    with pytest.raises(ConfigError, match=r"stream\.on_bad_request: .*'stop' or 'skip'"):
        build_config({"stream": {"on_bad_request": "ignore"}})
    with pytest.raises(ConfigError, match=r"update\.lrr: unknown field"):
        build_config({"update": {"lrr": 1}})
    with pytest.raises(ConfigError, match=r"update\.lr: .*greater than 0"):
        build_config({"update": {"lr": -1}})
    bad = tmp_path / "c.yaml"
    bad.write_text("strategy: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_unwritable_output_fails_before_work(tiny_prepared, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="cannot write"):
        Engine(_cfg(tiny_prepared, blocker / "run"), progress=False)


def test_not_prepared_dir(tmp_path):
    with pytest.raises(ConfigError, match="not a prepared directory"):
        Engine(_cfg(tmp_path, tmp_path / "run"), progress=False)


def test_example_configs_validate():
    from pathlib import Path

    for p in sorted(Path(__file__).parents[1].joinpath("examples").glob("*.yaml")):
        load_config(p)


def test_journal_drops_torn_last_line(tmp_path):
    p = tmp_path / "j.jsonl"
    p.write_text(json.dumps({"event": "start"}) + "\n" + '{"event": "rec')
    j = Journal(p)
    assert len(j.events) == 1
    j.append("x")
    j.close()
    assert [json.loads(x)["event"] for x in p.read_text().splitlines()] == ["start", "x"]


def test_request_events_of_one_request(tmp_path):
    with pytest.raises(JournalError, match="no journal; pass --run"):
        request_events(tmp_path, "a")
    j = Journal(tmp_path / "journal.jsonl")
    for event, rid in (("start", None), ("received", "a"), ("received", "b"), ("applied", "a")):
        j.append(event, id=rid)
    j.close()
    assert [e["event"] for e in request_events(tmp_path, "a")] == ["received", "applied"]
    with pytest.raises(JournalError, match="request 'c' is not in"):
        request_events(tmp_path, "c")


def test_config_hash_ignores_speed_knobs_and_keeps_old_journals_resumable(tmp_path):
    base = {"prepared": str(tmp_path), "out": str(tmp_path / "run")}
    cfg = build_config(base)
    # the reference cache changes speed only: another budget resumes the same run
    assert build_config({**base, "update": {"reference_cache_mb": 0}}).hash() == cfg.hash()
    # retain_match changes results: it is part of the hash
    old = build_config({**base, "update": {"retain_match": False}})
    assert old.hash() != cfg.hash()
    # a journal written before retain_match existed ran document-only anchors: its config (no such key)
    # matches retain_match=False, and the default names the field that differs
    legacy = old.model_dump(mode="json")
    del legacy["update"]["retain_match"]
    assert old.diff(legacy) == []
    assert cfg.diff(legacy) == ["update.retain_match"]
    # what a bad request does is not a result: a run may be resumed with stop or skip
    skip = build_config({**base, "update": {"retain_match": False}, "stream": {"on_bad_request": "skip"}})
    assert skip.hash() == old.hash() and skip.diff(legacy) == []


def test_stream_dataset_options_leave_old_configurations_unchanged(tmp_path):
    base = {"prepared": str(tmp_path), "out": str(tmp_path / "run")}
    cfg = build_config(base)
    assert "dataset" not in cfg.canonical()["stream"]  # hashes as before the option existed
    legacy = cfg.model_dump(mode="json")
    del legacy["stream"]["dataset"]
    assert cfg.diff(legacy) == []
    grouped = build_config({**base, "stream": {"dataset": {"group_by": "author"}}})
    assert grouped.hash() != cfg.hash() and grouped.diff(legacy) == ["stream.dataset.group_by"]


def test_a_fit_journal_from_before_fit_s_defaults_reads_back_as_it_ran(tmp_path):
    """A FIT configuration journaled before session 21 (no strategy.fit.rows_objective, no
    eval.quantize_embeddings, loop.enabled null) reads back as it ran: I chooses a row edit's objective, the attacks
    leave the embeddings alone, the loop is off; its hash is the one it was journaled with."""
    old_run = build_config(
        {
            "prepared": str(tmp_path),
            "strategy": {"name": "fit", "fit": {"rows_objective": None}},
            "update": {"trainable": "rows"},
            "loop": {"enabled": None},
            "eval": {"attacks": ["quantize4"], "quantize_embeddings": False},
        }
    )
    journaled = old_run.model_dump(mode="json")
    del journaled["strategy"]["fit"]["rows_objective"], journaled["eval"]["quantize_embeddings"]
    del journaled["loop"]["cap_quantile"], journaled["loop"]["check_ahead"]
    again = RunConfig.from_journal(journaled)
    assert again.strategy.fit.rows_objective is None and not again.quantize_embeddings and not again.loop_enabled
    assert again.loop.cap_quantile is None  # the plain mean it ran with, not FIT's capped default
    assert again.loop.check_ahead is None  # a check every loop.check_every steps
    assert again.hash() == old_run.hash() and old_run.diff(journaled) == []
    today = build_config({"prepared": str(tmp_path), "strategy": {"name": "fit"}, "eval": {"attacks": ["quantize4"]}})
    assert set(today.diff(journaled)) >= {"strategy.fit.rows_objective", "loop.enabled", "eval.quantize_embeddings"}


def test_fit_rows_mass_leaves_old_configurations_unchanged(tmp_path):
    base = {"prepared": str(tmp_path), "out": str(tmp_path / "run"), "strategy": {"name": "fit"}}
    cfg = build_config(base)
    assert "rows_mass" not in cfg.canonical()["strategy"]["fit"]["layers"]  # hashes as before the option existed
    legacy = cfg.model_dump(mode="json")
    del legacy["strategy"]["fit"]["layers"]["rows_mass"]
    assert cfg.diff(legacy) == []
    mass = build_config({**base, "strategy": {"name": "fit", "fit": {"layers": {"rows_mass": 0.9}}}})
    assert mass.hash() != cfg.hash() and mass.diff(legacy) == ["strategy.fit.layers.rows_mass"]


def test_document_only_requests(tiny_prepared, tmp_path):
    """strategy.include_qa: false — a request is its document alone; its QA pairs are still scored."""
    eng = Engine(
        _cfg(tiny_prepared, tmp_path / "doc", **{"strategy.include_qa": False, "stream.limit": 3}), progress=False
    )
    res = eng.run()
    eng.close()
    assert all(r["qa_items"] == 0 and r["steps"] == r["slices"] for r in res["requests"])  # 1 epoch, slices only
    assert res["evals"][-1]["forget"]["n_qa"] >= 3


def test_a_new_strategy_needs_only_plan(tiny_prepared, tmp_path):
    """The Strategy base declares the engine's whole contract: a strategy that defines only ``plan`` runs."""
    from fit_unlearn.strategies import STRATEGIES, Strategy, UpdatePlan, register_strategy

    @register_strategy("first-half")
    class FirstHalf(Strategy):
        def plan(self, request, model, tok):
            return UpdatePlan(text=request.text[: len(request.text) // 2], objective=self.objective)

    try:
        cfg = _cfg(tiny_prepared, tmp_path / "run", **{"strategy.name": "first-half", "stream.limit": 2})
        eng = Engine(cfg, progress=False)
        res = eng.run()
        eng.close()
        assert [r["objective"] for r in res["requests"]] == ["npo", "npo"]  # the configured objective
        assert all(r["qa_items"] == 0 and r["steps"] == 1 for r in res["requests"])
    finally:
        STRATEGIES.pop("first-half")
    with pytest.raises(ConfigError, match="are for strategy 'fit'"):
        Engine(_cfg(tiny_prepared, tmp_path / "r2", **{"strategy.fit": {"filter": False}}), progress=False)


def test_a_run_journaled_by_the_older_code_resumes(tiny_prepared, tmp_path):
    """Runs journaled before FIT's options and the objective parameters were typed (``strategy.fit`` and
    ``objective_params`` stored as the user's dicts, the hash taken over that blob) resume unchanged."""
    over = {
        "strategy.name": "fit",
        "strategy.fit": {"filter": False, "importance": {"calibrate": True, "calibration_size": 2}},
        "stream.limit": 4,
        "checkpoint.every": 2,
        "eval.every": 4,
        "loop.enabled": False,  # the older code had no closed loop
        # nor FIT's row-edit defaults: today's configuration of that run says so
        "update.trainable": "full",
        "update.template_max_df": None,
    }
    full = Engine(_cfg(tiny_prepared, tmp_path / "full", **over), progress=False)
    full.run()
    full.close()

    part = Engine(_cfg(tiny_prepared, tmp_path / "old", **{**over, "stream.limit": 2}), progress=False)
    part.run()
    part.close()
    # the start record as the older code wrote it: its config dump and its hash of that dump
    path = tmp_path / "old" / "journal.jsonl"
    lines = path.read_text().splitlines()
    start = json.loads(lines[0])
    old = {k: v for k, v in start["config"].items()}
    old["strategy"] = {**old["strategy"], "fit": over["strategy.fit"], "objective_params": {}}
    del old["loop"]
    old["stream"] = {**old["stream"], "limit": 4}
    blob = {k: v for k, v in old.items() if k != "out"}
    blob["update"] = {k: v for k, v in blob["update"].items() if k != "reference_cache_mb"}
    start["config"] = old
    start["config_hash"] = hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]
    rest = [json.loads(x) for x in lines[1:]]
    for e in rest:  # nor did it journal checkpoint digests or keep stream items by identity
        e.pop("digest", None)
    path.write_text("\n".join(json.dumps(e) for e in [start, *rest]) + "\n")
    state = tmp_path / "old" / "checkpoints" / "ckpt-000002" / "state.json"
    state.write_text(json.dumps({k: v for k, v in json.loads(state.read_text()).items() if k != "consumed"}))

    cfg = _cfg(tiny_prepared, tmp_path / "old", **over)
    assert start["config_hash"] != cfg.hash() and cfg.diff(old) == []
    resumed = Engine(cfg, resume=True, progress=False)
    assert resumed.position == 2
    res = resumed.run()
    resumed.close()
    assert set(res["applied_counts"].values()) == {1} and len(res["applied_counts"]) == 4
    wa = _weights(tmp_path / "full" / "checkpoints" / "ckpt-000004" / "model")
    wb = _weights(tmp_path / "old" / "checkpoints" / "ckpt-000004" / "model")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    # with the closed loop on, the same run is another computation: refused, named
    assert "loop.enabled" in _cfg(tiny_prepared, tmp_path / "old", **{**over, "loop.enabled": True}).diff(old)
    # and a setting that changes results is still refused, named
    old_lr = {**old, "update": {**old["update"], "lr": 5e-4}}
    assert cfg.diff(old_lr) == ["update.lr"]


@pytest.mark.parametrize(
    "over,msg",
    [
        ({"strategy.fit": {"filter": {"tau": 2}}}, "strategy.fit.filter.tau: Input should be less than or equal to 1"),
        ({"strategy.fit": {"layers": {"method": "skip"}}}, "strategy.fit.layers.method: Input should be 'auto'"),
        ({"strategy.fit": {"importance": {"objectives": ["npo", "npo", "gaa"]}}}, "did you mean 'ga'"),
        (
            {"strategy.fit": {"importance": {"objective_params": {"rl": {"retain_weight": "x"}}}}},
            "objective 'rl': retain_weight: Input should be a valid number",
        ),
        ({"strategy.fit": {"filtr": True}}, "strategy.fit.filtr: unknown field"),
        ({"strategy.objective_params": {"beta": -1}}, "objective 'npo': beta must be > 0"),
        ({"strategy.name": "fitt"}, "did you mean 'fit'"),
    ],
)
def test_fit_and_objective_settings_fail_at_config_load(tmp_path, over, msg):
    base = {"prepared": str(tmp_path), "out": str(tmp_path / "run"), "strategy": {"name": "fit"}}
    for k, v in over.items():
        base.setdefault(k.split(".")[0], {})[k.split(".")[1]] = v
    with pytest.raises(ConfigError, match=msg.replace("(", r"\(")):
        build_config(base)


def test_the_plan_carries_the_objective_resolved_at_load(tiny_prepared, tmp_path):
    cfg = _cfg(tiny_prepared, tmp_path / "r", **{"strategy.objective_params": {"beta": 0.5}})
    resolved = cfg.strategy.resolved_objective
    assert resolved.name == "npo" and resolved.config.beta == 0.5
    strategy = cfg.strategy.build()
    assert strategy.objective is resolved  # built with it, not looked up again
    plan = strategy.plan(Document(id="x", text="Name: Ada"), None, None)
    assert plan.objective is resolved
    fit = build_config({**cfg.model_dump(mode="json"), "strategy": {"name": "fit", "fit": {"filter": False}}})
    objectives = fit.strategy.build().objectives
    assert [o.name for o in objectives] == ["npo_kl", "npo", "rl"]
    assert objectives[0] is fit.strategy.fit.importance.objective("npo_kl")


def test_docs_config_reference_is_generated_from_the_schema():
    from pathlib import Path

    from fit_unlearn.engine.config import config_reference

    doc = Path(__file__).parents[1] / "docs" / "config.md"
    assert doc.read_text() == config_reference(), "regenerate docs/config.md: fit-unlearn config > docs/config.md"


def test_two_crashes_between_the_same_checkpoints_are_counted_exactly(tiny_prepared, tmp_path):
    over = {"checkpoint.every": 4, "eval.every": 6}
    full = Engine(_cfg(tiny_prepared, tmp_path / "full", **over), progress=False)
    res_full = full.run()
    full.close()
    _crash_after(Engine(_cfg(tiny_prepared, tmp_path / "c", **over), progress=False), 5)  # ckpt at 4, item 4 lost
    again = Engine(_cfg(tiny_prepared, tmp_path / "c", **over), resume=True, progress=False)
    assert again.position == 4
    _crash_after(again, 6)  # item 4 applied a second time, item 5 too, then lost again
    last = Engine(_cfg(tiny_prepared, tmp_path / "c", **over), resume=True, progress=False)
    j = Journal(tmp_path / "c" / "journal.jsonl", writer=False)
    assert [e["position"] for e in j.events if e["event"] == "rolled_back"] == [4, 4, 5]
    assert j.uncommitted() == []
    res = last.run()
    last.close()
    assert res["applied_counts"] == res_full["applied_counts"] and set(res["applied_counts"].values()) == {1}
    wa = _weights(tmp_path / "full" / "checkpoints" / "ckpt-000006" / "model")
    wb = _weights(tmp_path / "c" / "checkpoints" / "ckpt-000006" / "model")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_a_crash_between_saving_and_journaling_a_checkpoint_keeps_the_journaled_one(
    tiny_prepared, tmp_path, monkeypatch
):
    """With keep=1, the old code pruned the only journaled checkpoint before journaling the new one."""
    over = {"checkpoint.every": 2, "checkpoint.keep": 1, "eval.every": 6}
    full = Engine(_cfg(tiny_prepared, tmp_path / "full", **over), progress=False)
    res_full = full.run()
    full.close()

    crashed = Engine(_cfg(tiny_prepared, tmp_path / "c", **over), progress=False)
    real_append = crashed.journal.append

    def append(event, **fields):
        if event == "checkpoint" and fields["position"] == 4:
            raise KeyboardInterrupt("killed after the checkpoint at 4 was written, before it was journaled")
        return real_append(event, **fields)

    monkeypatch.setattr(crashed.journal, "append", append)
    with pytest.raises(KeyboardInterrupt):
        crashed.run()
    del crashed
    resumed = Engine(_cfg(tiny_prepared, tmp_path / "c", **over), resume=True, progress=False)
    assert resumed.position == 2
    res = resumed.run()
    resumed.close()
    assert res["applied_counts"] == res_full["applied_counts"]
    assert [e["forget_degree_strict"] for e in res["evals"]] == [e["forget_degree_strict"] for e in res_full["evals"]]
    assert len(list((tmp_path / "c" / "checkpoints").glob("ckpt-*"))) == 1


def test_checkpoint_files_are_fsynced_and_verified_by_content(tiny_prepared, tmp_path, monkeypatch):
    import os

    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    eng = Engine(_cfg(tiny_prepared, tmp_path / "r", **{"stream.limit": 2, "checkpoint.every": 2}), progress=False)
    eng.run()
    eng.close()
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert any(p.endswith("model.safetensors") for p in synced) and any(p.endswith("state.json") for p in synced)
    ck = Journal(tmp_path / "r" / "journal.jsonl", writer=False).last_checkpoint()
    assert len(ck["digest"]) == 64
    weights = tmp_path / "r" / "checkpoints" / "ckpt-000002" / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4096])  # a power loss before the data reached the disk
    with pytest.raises(JournalError, match="ckpt-000002: the journal's last checkpoint is corrupt"):
        Engine(_cfg(tiny_prepared, tmp_path / "r", **{"stream.limit": 2, "checkpoint.every": 2}), resume=True)


def test_an_evaluation_lost_in_a_crash_is_redone_on_resume(tiny_prepared, tmp_path, monkeypatch):
    over = {"checkpoint.every": 3, "eval.every": 3}
    full = Engine(_cfg(tiny_prepared, tmp_path / "full", **over), progress=False)
    res_full = full.run()
    full.close()

    crashed = Engine(_cfg(tiny_prepared, tmp_path / "c", **over), progress=False)

    def killed(*a, **k):
        raise KeyboardInterrupt("killed during the evaluation at t=3")

    monkeypatch.setattr(crashed.hooks, "evaluate", killed)
    with pytest.raises(KeyboardInterrupt):
        crashed.run()
    del crashed
    resumed = Engine(_cfg(tiny_prepared, tmp_path / "c", **over), resume=True, progress=False)
    assert resumed.position == 3 and resumed.evals == []
    res = resumed.run()
    resumed.close()

    def strip(e):
        return {k: v for k, v in e.items() if k not in ("time", "seconds")}  # wall-clock times

    assert [e["t"] for e in res["evals"]] == [3, 6]
    assert [strip(e) for e in res["evals"]] == [strip(e) for e in res_full["evals"]]


#: the closed loop with its guard: a replayed request must stop and be guarded as it was the first time
LOOPED = {
    "strategy.objective": "ga",
    "update": {"lr": 1e-2, "epochs": 1, "retain_batch_size": 1},
    "loop": {"enabled": True, "max_steps": 4, "lr": None, "guard": {"budget": 0.01, "max_steps": 2}},
}


@pytest.mark.parametrize("loop", [False, True], ids=["open", "loop"])
def test_submit_is_durable_on_return(tiny_prepared, tmp_path, loop):
    """A crash after submit() returned (before any checkpoint) loses nothing: resume applies it again."""
    docs = [Document(id=f"s{i}", text=f"Name: Person {i}\n\nAge: {30 + i}\n\nOccupation: clockmaker") for i in range(3)]
    over = {"checkpoint.every": 10, "eval.every": None, "eval.at_end": False, **(LOOPED if loop else {})}
    full = Engine(_cfg(tiny_prepared, tmp_path / "full", **over), progress=False)
    for d in docs:
        full.submit(d)
    full.checkpoint()
    full.close()

    crashed = Engine(_cfg(tiny_prepared, tmp_path / "c", **over), progress=False)
    for d in docs:
        crashed.submit(d)
    del crashed  # killed: no checkpoint after the three requests
    resumed = Engine(_cfg(tiny_prepared, tmp_path / "c", **over), resume=True, progress=False)
    assert resumed.position == 3 and list(resumed.applied_ids) == ["s0", "s1", "s2"]
    resumed.checkpoint()
    resumed.close()
    assert Journal(tmp_path / "c" / "journal.jsonl", writer=False).applied_counts() == {"s0": 1, "s1": 1, "s2": 1}
    wa = _weights(tmp_path / "full" / "checkpoints" / "ckpt-000003" / "model")
    wb = _weights(tmp_path / "c" / "checkpoints" / "ckpt-000003" / "model")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_an_update_that_raises_stops_the_engine_until_resume(tiny_prepared, tmp_path, monkeypatch):
    import fit_unlearn.engine.runner as runner

    over = {"stream.limit": 4, "checkpoint.every": 2, "eval.every": 4}
    full = Engine(_cfg(tiny_prepared, tmp_path / "full", **over), progress=False)
    res_full = full.run()
    full.close()

    eng = Engine(_cfg(tiny_prepared, tmp_path / "c", **over), progress=False)
    real = runner.apply_update
    calls = []

    def flaky(model, *a, **k):
        calls.append(1)
        if len(calls) == 3:  # the third request: half an update, then an error
            with torch.no_grad():
                next(model.parameters()).add_(0.01)
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return real(model, *a, **k)

    monkeypatch.setattr(runner, "apply_update", flaky)
    with pytest.raises(RuntimeError, match="illegal memory access"):
        eng.run()
    with pytest.raises(JournalError, match="failed: RuntimeError.*accepts no more work: resume"):
        eng.submit(Document(id="late", text="Name: Late Person"))
    with pytest.raises(JournalError, match="accepts no more work"):
        eng.checkpoint()  # the partly updated model is never saved
    eng.close()
    monkeypatch.setattr(runner, "apply_update", real)
    resumed = Engine(_cfg(tiny_prepared, tmp_path / "c", **over), resume=True, progress=False)
    res = resumed.run()
    resumed.close()
    assert res["applied_counts"] == res_full["applied_counts"]
    assert [e["forget_degree_strict"] for e in res["evals"]] == [e["forget_degree_strict"] for e in res_full["evals"]]
    events = [e["event"] for e in Journal(tmp_path / "c" / "journal.jsonl", writer=False).events]
    assert "failed" in events


def _req(i: int) -> bytes:
    return json.dumps({"id": f"w{i}", "text": f"Name: Watched Person {i}\n\nAge: {20 + i}"}).encode()


def _kill_at(engine, event: str, **match) -> None:
    """Run ``engine`` until it journals ``event`` with the fields ``match``; die there (no clean-up)."""
    real = engine.journal.append

    def append(ev, **fields):
        if ev == event and all(fields.get(k) == v for k, v in match.items()):
            raise KeyboardInterrupt(f"killed at {event} {match}")
        return real(ev, **fields)

    engine.journal.append = append
    with pytest.raises(KeyboardInterrupt):
        engine.run()


def test_watch_mode_keeps_progress_by_identity(tiny_prepared, tmp_path):
    """A file with an earlier name and lines appended to a file already read do not shift what resume
    skips: every request is applied exactly once."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "b.jsonl").write_bytes(b"\n".join(_req(i) for i in range(3)) + b"\n")
    over = {
        "stream.source": f"watch:{inbox}",
        "stream.watch_idle_exit": 0.0,
        "stream.limit": None,
        "checkpoint.every": 2,
        "eval.every": None,
        "eval.at_end": False,
    }
    crashed = Engine(_cfg(tiny_prepared, tmp_path / "c", **over), progress=False)
    _kill_at(crashed, "received", id="w2")  # after w0, w1 (checkpointed); w2 is lost
    del crashed
    (inbox / "a.jsonl").write_bytes(_req(3) + b"\n")  # sorts before b.jsonl
    with open(inbox / "b.jsonl", "ab") as f:
        f.write(_req(4) + b"\n")
    resumed = Engine(_cfg(tiny_prepared, tmp_path / "c", **over), resume=True, progress=False)
    res = resumed.run()
    resumed.close()
    assert res["applied_counts"] == {f"w{i}": 1 for i in range(5)}
    assert not res["rejected"]


def test_a_watched_file_that_grows_is_followed(tmp_path):
    from fit_unlearn.engine.streams import watched_requests

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a.jsonl").write_bytes(_req(0) + b"\n" + _req(1))  # the last line is still being written
    (inbox / "b.jsonl").write_bytes(_req(5) + b"\n")
    got = watched_requests(inbox, 10_000, idle_exit=0.3, poll=0.05)
    # w1 once its file has stopped growing for one poll, so after b.jsonl's w5
    assert [next(got)[1].id for _ in range(3)] == ["w0", "w5", "w1"]
    with open(inbox / "a.jsonl", "ab") as f:  # a whole line appended to a file already read
        f.write(b"\n" + _req(2) + b"\n")
    assert [d.id for _, d in got] == ["w2"]


def test_on_bad_request_can_change_on_resume(tiny_prepared, tmp_path):
    reqs = tmp_path / "req.jsonl"
    reqs.write_bytes(_req(0) + b"\n" + b'{"id": "bad", "text": ""}\n' + _req(1) + b"\n")
    over = {"stream.source": str(reqs), "stream.limit": None, "eval.every": None}
    with pytest.raises(RequestError, match="empty or whitespace-only"):
        Engine(_cfg(tiny_prepared, tmp_path / "r", **over), progress=False).run()
    eng = Engine(_cfg(tiny_prepared, tmp_path / "r", **over, **{"stream.on_bad_request": "skip"}), resume=True)
    res = eng.run()
    eng.close()
    assert res["applied_counts"] == {"w0": 1, "w1": 1}
    assert [e["id"] for e in res["rejected"]] == [None, None]  # stopped on it, then skipped it


@pytest.mark.parametrize("name", ["fit-paper", "ga", "graddiff", "npo"])
def test_the_example_configs_load_and_keep_the_published_open_loop(name):
    """examples/*.yaml validate; the baselines and the paper's FIT run open-loop, as published."""
    import yaml

    from fit_unlearn.engine.config import build_config

    path = Path(__file__).parent.parent / "examples" / f"{name}.yaml"
    cfg = build_config(yaml.safe_load(path.read_text()))
    assert not cfg.loop_enabled and cfg.update.trainable == "full"


def test_fit_s_example_is_its_defaults():
    """examples/fit.yaml spells out FIT's defaults: a configuration naming only the strategy is the same run."""
    import yaml

    from fit_unlearn.engine.config import build_config

    path = Path(__file__).parent.parent / "examples" / "fit.yaml"
    example = build_config(yaml.safe_load(path.read_text()))
    bare = build_config({"strategy": {"name": "fit", "fit": {"importance": {"calibrate": True}}}})
    assert example.loop_enabled and example.update.trainable == "rows"
    assert example.canonical() == bare.canonical()


def test_a_strategy_s_defaults_apply_only_where_the_configuration_is_silent():
    """FIT's config_defaults fill what a configuration leaves unset (mapping or Python section alike); every value
    given explicitly wins; other strategies keep the typed defaults."""
    from fit_unlearn.engine.config import build_config
    from fit_unlearn.engine.loop import LoopConfig
    from fit_unlearn.engine.update import UpdateConfig

    fit = build_config({"strategy": {"name": "fit"}, "update": {"lr": 1e-3}})
    assert (fit.update.trainable, fit.update.template_max_df, fit.update.lr) == ("rows", 0.2, 1e-3)
    assert (fit.loop_enabled, fit.loop.check_every, fit.strategy.fit.rows_objective) == (True, 2, "ga")
    assert fit.loop.cap_quantile == 0.7 and build_config({}).loop.cap_quantile is None
    assert (fit.loop.check_ahead, fit.loop.stall_steps) == (0.5, None)
    assert (build_config({}).loop.check_ahead, build_config({}).loop.stall_steps) == (None, None)
    assert (fit.loop.neighbours, build_config({}).loop.neighbours) == (3, None)
    # the neighbours belong to the holdout target: asking for the base model's loss drops them, unless given too
    for base in ({"target": "base"}, LoopConfig(target="base")):
        assert build_config({"strategy": {"name": "fit"}, "loop": base}).loop.neighbours is None
    with pytest.raises(ConfigError, match="loop.neighbours picks holdout documents"):
        build_config({"strategy": {"name": "fit"}, "loop": {"target": "base", "neighbours": 3}})
    assert build_config({"strategy": {"name": "fit"}, "loop": {"target": "both"}}).loop.neighbours == 3
    nostop = build_config({"strategy": {"name": "fit"}, "loop": {"stop": False}})
    assert not {"cap_quantile", "check_ahead", "stall_steps"} & set(nostop.canonical()["loop"])  # the stop's only
    assert build_config({"strategy": {"name": "fit"}, "loop": {"cap_quantile": None}}).loop.cap_quantile is None
    assert fit.quantize_embeddings and fit.strategy.fit.filter.unit == "tokens"
    # a section given as `true` takes its defaults, FIT's among them; one switched off stays off; a value given wins
    on = build_config({"strategy": {"name": "fit", "fit": {"filter": True}}})
    assert on.strategy.fit.filter.unit == "tokens"
    assert build_config({"strategy": {"name": "fit", "fit": {"filter": False}}}).strategy.fit.filter is None
    assert build_config({"strategy": {"name": "fit", "fit": {"filter": None}}}).strategy.fit.filter is None
    chars = build_config({"strategy": {"name": "fit", "fit": {"filter": {"unit": "chars", "tau": 0.8}}}})
    assert (chars.strategy.fit.filter.unit, chars.strategy.fit.filter.tau) == ("chars", 0.8)
    given = build_config(
        {
            "strategy": {"name": "fit", "fit": {"rows_objective": None, "importance": False}},
            "update": {"trainable": "full", "template_max_df": None},
            "loop": {"enabled": False, "check_every": 1},
        }
    )
    assert (given.update.trainable, given.update.template_max_df, given.loop_enabled) == ("full", None, False)
    assert (given.loop.check_every, given.strategy.fit.rows_objective, given.strategy.fit.importance) == (1, None, None)
    assert not given.quantize_embeddings
    built = build_config({"strategy": {"name": "fit"}, "update": UpdateConfig(lr=1e-3), "loop": LoopConfig()})
    assert (built.update.trainable, built.update.lr, built.loop_enabled, built.loop.check_every) == (
        "rows",
        1e-3,
        True,
        2,
    )
    assert (
        build_config({"strategy": {"name": "fit"}, "update": UpdateConfig(trainable="full")}).update.trainable == "full"
    )
    seq = build_config({"strategy": {"name": "sequential"}})
    assert (seq.update.trainable, seq.loop_enabled, seq.strategy.fit.rows_objective) == ("full", False, None)
    assert build_config({}).update.trainable == "full"


def test_row_edits_quantize_the_embeddings_in_the_attacks():
    """A run that edits embedding rows attacks them (eval.quantize_embeddings null); bitsandbytes cannot, refused."""
    from fit_unlearn.engine.config import build_config

    rows = {"update": {"trainable": "rows"}, "eval": {"attacks": ["quantize4"]}}
    assert build_config(rows).quantize_embeddings
    assert not build_config(
        {**rows, "eval": {"attacks": ["quantize4"], "quantize_embeddings": False}}
    ).quantize_embeddings
    assert not build_config({"eval": {"attacks": ["quantize4"]}}).quantize_embeddings
    with pytest.raises(ConfigError, match="bnb keeps the token embeddings"):
        build_config({**rows, "eval": {"attacks": ["quantize4"], "quantize_method": "bnb"}})


def test_row_edits_index_the_corpus_but_never_retain_eval(tiny_prepared, tmp_path):
    """update.trainable: rows: the token index behind a request's own tokens holds retain-train, holdout and the
    forget set, never retain-eval (it measures utility); the receipt lists the rows edited."""
    over = {"update": {"lr": 1e-3, "epochs": 1, "retain_batch_size": 1, "trainable": "rows"}, "stream.limit": 2}
    eng = Engine(_cfg(tiny_prepared, tmp_path / "r", **over), progress=False)
    indexed = set().union(*eng.token_docs.values())
    assert indexed == {d.id for d in eng.data.retain_train + eng.data.holdout + eng.data.forget}
    assert not indexed & {d.id for d in eng.data.retain_eval}
    res = eng.run()
    eng.close()
    rec = res["requests"][0]
    assert rec["rows"]["edited"] and rec["params_touched"] == len(rec["rows"]["tokens"]) * 64


def test_row_edits_leave_general_words_out_with_general_zipf(tiny_prepared, tmp_path):
    """update.rows.general_zipf: the engine never edits a token that general text reads often (punctuation, frequent
    words), though without it the same requests would have edited some."""
    from fit_unlearn.engine.rows import general_tokens, own_tokens

    rows = {"general_zipf": 4.0, "max_df": 2}
    over = {"update": {"lr": 1e-3, "epochs": 1, "trainable": "rows", "rows": rows}, "stream.limit": 3}
    eng = Engine(_cfg(tiny_prepared, tmp_path / "r", **over), progress=False)
    general = general_tokens(eng.tok, 4.0)
    assert eng.general_rows == general and general
    res = eng.run()
    eng.close()
    edited = [set(r["rows"]["tokens"]) for r in res["requests"] if r.get("rows", {}).get("edited")]
    assert edited and not set().union(*edited) & general
    docs = {d.id: d for d in eng.data.forget}
    without = [
        own_tokens(eng.tok, i, docs[i].text, docs[i].qa, eng.token_docs, 2)[0]
        for i in (r["id"] for r in res["requests"])
    ]
    assert set().union(*map(set, without)) & general


def test_row_edits_may_reuse_the_tokens_of_forgotten_documents(tiny_prepared, tmp_path):
    """update.rows.reuse_forgotten: each request edits the tokens no document still kept holds (the requests before it
    no longer count), so later requests edit rows the default leaves alone; a resumed run edits the same rows."""
    from fit_unlearn.engine.rows import own_tokens

    over = {
        "update": {
            "lr": 1e-3,
            "epochs": 1,
            "trainable": "rows",
            "rows": {"reuse_forgotten": True, "reuse_zipf": 0, "reuse_max_df": 2},
        },
        "eval": {"every": None, "at_end": False},
    }
    full = Engine(_cfg(tiny_prepared, tmp_path / "full", **over), progress=False)
    res_full = full.run()
    full.close()
    docs = {d.id: d for d in full.data.forget}
    ids = [r["id"] for r in res_full["requests"]]
    grew = 0
    for k, rec in enumerate(res_full["requests"]):
        d = docs[rec["id"]]
        freed, _ = own_tokens(full.tok, d.id, d.text, d.qa, full.token_docs, 0, 1, forgotten=ids[:k], reuse_max=2)
        kept, _ = own_tokens(full.tok, d.id, d.text, d.qa, full.token_docs, 0, 1)
        assert rec["rows"]["tokens"] == freed and set(kept) <= set(freed)
        grew += len(freed) > len(kept)
    assert grew  # a later request edited a row an earlier one shared with it
    crashed = Engine(_cfg(tiny_prepared, tmp_path / "c", **over), progress=False)
    _crash_after(crashed, 5)  # checkpoint after 4: the resumed run must count the same four as forgotten
    del crashed
    resumed = Engine(_cfg(tiny_prepared, tmp_path / "c", **over), resume=True, progress=False)
    res = resumed.run()
    resumed.close()
    assert [r["rows"] for r in res["requests"]] == [r["rows"] for r in res_full["requests"]]
    wa = _weights(tmp_path / "full" / "checkpoints" / "ckpt-000006" / "model")
    wb = _weights(tmp_path / "c" / "checkpoints" / "ckpt-000006" / "model")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_row_edits_cover_the_questions_read_in_shared_words(tiny_prepared, tmp_path):
    """update.rows.cover_prompts: a request whose question holds none of its own tokens also edits the question's
    rarest word (the receipt's rows.covered names it); the other requests edit what the option off edits.  With
    rows.cover_min 2, a question holding one edited token gets its next rarest word edited too."""
    from fit_unlearn.engine.rows import holder_count, prompt_keys

    def run(name, cover, least=1):
        rows = {"cover_prompts": cover, "cover_max_df": 50, "cover_min": least}
        over = {"update": {"lr": 1e-3, "epochs": 1, "trainable": "rows", "rows": rows}}
        eng = Engine(
            _cfg(tiny_prepared, tmp_path / name, **over, eval={"every": None, "at_end": False}), progress=False
        )
        res = eng.run()
        eng.close()
        return eng, res["requests"]

    eng, on = run("on", True)
    _, off = run("off", False)
    docs = {d.id: d for d in eng.data.forget}
    covered = 0
    for a, b in zip(on, off, strict=True):
        d = docs[a["id"]]
        want = prompt_keys(eng.tok, d.qa, b["rows"]["tokens"], holder_count(d.id, eng.token_docs), frozenset(), 50)
        assert a["rows"]["covered"] == want
        assert a["rows"]["tokens"] == sorted({*b["rows"]["tokens"], *(c["token"] for c in want)})
        covered += bool(want)
    assert covered  # some request of the tiny stream asks in shared words only
    _, two = run("two", True, least=2)
    more = 0
    for a, b, c in zip(two, off, on, strict=True):
        d = docs[a["id"]]
        want = prompt_keys(eng.tok, d.qa, b["rows"]["tokens"], holder_count(d.id, eng.token_docs), frozenset(), 50, 2)
        assert a["rows"]["covered"] == want
        more += len(want) > len(c["rows"]["covered"])
    assert more  # some question held one edited token: a second word was edited for it


def test_the_evaluation_schedule():
    from fit_unlearn.engine.config import EvalSection

    assert EvalSection(every=2).checkpoints(5) == [2, 4, 5]
    assert EvalSection(every=None).checkpoints(4) == [4]
    assert EvalSection(every=3).checkpoints(6) == [3, 6]
    assert EvalSection(every=2, at_end=False).checkpoints(5) == [2, 4]
    assert not EvalSection(every=2).due(0) and EvalSection(every=2).due(4) and not EvalSection(every=2).due(5)
