"""The closed loop (engine/loop.py): stop at the non-member level, the utility guard, resume."""

import json

import pytest
import torch
from test_engine import _cfg, _crash_after, _weights

from fit_unlearn.engine import Engine, Journal
from fit_unlearn.engine.loop import nonmember_level, stop_rule
from fit_unlearn.engine.update import UpdateConfig, examples_loss, forget_examples, token_losses
from fit_unlearn.errors import ConfigError
from fit_unlearn.layers import trainable_names

LOOP = {
    "strategy.objective": "ga",
    "update": {"lr": 1e-2, "epochs": 1, "retain_batch_size": 1},
    "loop": {"enabled": True, "max_steps": 12, "lr": None, "guard": {"enabled": False}},
    "stream.limit": 4,
    "eval.every": 4,
}


def test_the_target_is_the_holdout_quantile_of_the_initial_model(tiny_model, tiny_data):
    model, tok = tiny_model
    cfg = UpdateConfig()
    level = nonmember_level(model, tok, tiny_data.holdout, True, cfg, 0.5)
    losses = [examples_loss(model, tok, forget_examples(tok, d.text, d.qa, cfg)[1]) for d in tiny_data.holdout]
    assert level["losses"] == pytest.approx(losses)
    assert level["target"] == pytest.approx(float(torch.tensor(losses).quantile(0.5)))
    with pytest.raises(ConfigError, match="needs the prepared holdout split"):
        nonmember_level(model, tok, [], True, cfg, 0.5)


def test_a_cap_winsorises_the_holdout_level_and_the_measure(tiny_model, tiny_data):
    """loop.cap_quantile: each token's loss counts at most the cap, the quantile of every holdout token's loss;
    the target is the quantile of the holdout documents' capped means."""
    model, tok = tiny_model
    cfg = UpdateConfig()
    examples = [forget_examples(tok, d.text, d.qa, cfg)[1] for d in tiny_data.holdout]
    every = [x for ex in examples for x in token_losses(model, tok, ex)]
    assert len(every) == sum(int((torch.tensor(e.labels[1:]) != -100).sum()) for ex in examples for e in ex)
    level = nonmember_level(model, tok, tiny_data.holdout, True, cfg, 0.5, cap_quantile=0.6)
    cap = float(torch.tensor(every, dtype=torch.float64).quantile(0.6))
    assert level["cap"] == pytest.approx(cap) and level["cap_quantile"] == 0.6 and cap < max(every)
    for ex, got in zip(examples, level["losses"], strict=True):
        mine = token_losses(model, tok, ex)
        assert examples_loss(model, tok, ex, cap=cap) == pytest.approx(sum(min(x, cap) for x in mine) / len(mine))
        assert got == pytest.approx(examples_loss(model, tok, ex, cap=cap))
        assert got < examples_loss(model, tok, ex)  # every holdout document here has a token above the cap
    assert level["target"] == pytest.approx(float(torch.tensor(level["losses"]).quantile(0.5)))
    assert "cap" not in nonmember_level(model, tok, tiny_data.holdout, True, cfg, 0.5)


def test_a_capped_stop_measures_each_request_as_its_target(tiny_prepared, tmp_path):
    """The receipt keeps the cap; the loss before and after is the capped measure (theta_0's first request
    recomputed), never above the cap; resume stays bit-identical."""
    over = {**LOOP, "loop": {**LOOP["loop"], "cap_quantile": 0.6}, "checkpoint.every": 2}
    res_full, cal = _resumed_bit_identical(tiny_prepared, tmp_path, over)
    cap = cal["level"]["cap"]
    eng = Engine(_cfg(tiny_prepared, tmp_path / "x", **over), progress=False)
    first = {d.id: d for d in eng.data.forget}[res_full["requests"][0]["id"]]
    ex = forget_examples(eng.tok, first.text, first.qa, eng.cfg.update, eng.common)[1]
    assert res_full["requests"][0]["loop"]["loss_before"] == pytest.approx(
        examples_loss(eng.model, eng.tok, ex, cap=cap)
    )
    eng.close()
    for r in res_full["requests"]:
        lp = r["loop"]
        assert lp["cap"] == cap and lp["target"] == cal["level"]["target"] and lp["loss_after"] <= cap
        assert lp["stopped"] == "budget" or lp["loss_after"] >= lp["target"]


def test_each_request_s_target_comes_from_its_nearest_holdout_documents(tiny_prepared, tmp_path):
    """loop.neighbours: each request's target is the quantile of theta_0's losses on the k holdout documents whose
    TF-IDF vectors are nearest its document's (named in the receipt, the nearest first); the targets differ between
    requests, the stop obeys each; resume stays bit-identical."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.metrics.pairwise import cosine_similarity

    over = {**LOOP, "loop": {**LOOP["loop"], "neighbours": 2}, "checkpoint.every": 2}
    res_full, cal = _resumed_bit_identical(tiny_prepared, tmp_path, over)
    eng = Engine(_cfg(tiny_prepared, tmp_path / "x", **over), progress=False)
    holdout, docs = eng.data.holdout, {d.id: d for d in eng.data.forget}
    eng.close()
    losses = cal["level"]["losses"]
    vec = TfidfVectorizer(sublinear_tf=True).fit([d.text for d in holdout])
    targets = set()
    for r in res_full["requests"]:
        sim = cosine_similarity(vec.transform([docs[r["id"]].text]), vec.transform([d.text for d in holdout]))[0]
        near = sorted(range(len(holdout)), key=lambda i: (-sim[i], i))[:2]
        lp = r["loop"]
        assert lp["neighbours"] == [holdout[i].id for i in near]
        assert lp["target"] == pytest.approx(sum(losses[i] for i in near) / 2)  # the median of two
        assert lp["stopped"] == "budget" or lp["loss_after"] >= lp["target"]
        targets.add(round(lp["target"], 9))
    assert len(targets) > 1 and cal["level"]["target"] not in targets
    from fit_unlearn.engine.loop import LoopConfig

    with pytest.raises(ValueError, match="loop.neighbours picks holdout documents"):
        LoopConfig(neighbours=3, target="base")


def test_each_request_stops_once_it_reaches_the_target(tiny_prepared, tmp_path):
    eng = Engine(_cfg(tiny_prepared, tmp_path / "r", **LOOP), progress=False)
    res = eng.run()
    eng.close()
    events = Journal(tmp_path / "r" / "journal.jsonl", writer=False).events
    target = next(e for e in events if e["event"] == "loop_calibrated")["level"]["target"]
    loops = [r["loop"] for r in res["requests"]]
    assert all(lp["target"] == target for lp in loops)
    for lp in loops:
        assert lp["steps"] <= 12
        if lp["loss_before"] >= target:
            assert lp["steps"] == 0 and lp["stopped"] == "target"
        elif lp["stopped"] == "target":
            assert lp["loss_after"] >= target > lp["loss_before"]
        else:
            assert lp["stopped"] == "budget" and lp["steps"] == 12 and lp["loss_after"] < target
    assert any(lp["stopped"] == "target" and 0 < lp["steps"] < 12 for lp in loops), loops  # stopped early


def test_the_loop_follows_the_strategy_default_unless_configured(tiny_prepared, tmp_path, monkeypatch):
    from fit_unlearn.strategies.fit.strategy import FitStrategy

    assert _cfg(tiny_prepared, tmp_path, **{"strategy.name": "fit"}).loop_enabled  # FIT's config_defaults
    assert not _cfg(tiny_prepared, tmp_path, **{"strategy.name": "fit", "loop.enabled": None}).loop_enabled
    monkeypatch.setattr(FitStrategy, "closed_loop", True)  # what loop.enabled: null follows
    assert _cfg(tiny_prepared, tmp_path, **{"strategy.name": "fit", "loop.enabled": None}).loop_enabled
    assert not _cfg(tiny_prepared, tmp_path).loop_enabled
    assert _cfg(tiny_prepared, tmp_path, **{"loop.enabled": True}).loop_enabled
    assert not _cfg(tiny_prepared, tmp_path, **{"strategy.name": "fit", "loop.enabled": False}).loop_enabled


def test_the_guard_repairs_drift_on_retain_train_only(tiny_prepared, tmp_path):
    over = {
        **LOOP,
        "loop": {"enabled": True, "max_steps": 12, "lr": None, "guard": {"budget": 0.01, "max_steps": 4, "lr": 1e-3}},
    }
    eng = Engine(_cfg(tiny_prepared, tmp_path / "r", **over), progress=False)
    train_ids = {d.id for d in eng.data.retain_train}
    assert set(eng.guard.pool_ids) <= train_ids and not set(eng.guard.pool_ids) & {d.id for d in eng.data.retain_eval}
    res = eng.run()
    eng.close()
    guards = [r["guard"] for r in res["requests"]]
    repaired = [g for g in guards if g["repair_steps"]]
    assert repaired, guards
    assert all(g["drift_before"] > 0.01 for g in repaired)
    assert all(g["drift_after"] < g["drift_before"] for g in repaired)
    # a step that made the probe worse was undone: the guard never leaves it worse than it found it
    assert all(g["drift_after"] <= g["drift_before"] for g in guards if "drift_after" in g)
    assert all(g["repair_steps"] == 0 for g in guards if g["drift_before"] <= 0.01)


@pytest.mark.parametrize("scope", ["update", "all"])
def test_a_scoped_repair_trains_only_what_the_update_trained(tiny_prepared, tmp_path, scope):
    """guard.scope: update repairs the weights the request's update trained (here layer 0), nothing else."""
    over = {
        **LOOP,
        "strategy.trainable": [0],
        "stream.limit": 2,
        "loop": {
            "enabled": True,
            "max_steps": 12,
            "lr": None,
            "guard": {"budget": 0.001, "max_steps": 3, "lr": 1e-3, "scope": scope},
        },
    }
    eng = Engine(_cfg(tiny_prepared, tmp_path / "r", **over), progress=False)
    before = {n: p.detach().clone() for n, p in eng.model.named_parameters()}
    res = eng.run()
    assert any(r["guard"]["repair_steps"] for r in res["requests"]), [r["guard"] for r in res["requests"]]
    moved = {n for n, p in eng.model.named_parameters() if not torch.equal(p, before[n])}
    in_layer = set(trainable_names(eng.model, [0]))
    eng.close()
    if scope == "update":
        assert moved and moved <= in_layer
    else:
        assert moved - in_layer  # the unscoped repair moves weights the update never trained


def test_the_guard_probe_is_never_an_anchor(tiny_prepared, tmp_path, monkeypatch):
    """An update that trained on the probe would hide its own damage from the guard."""
    import fit_unlearn.engine.runner as runner

    seen = []
    real = runner.apply_update

    def spy(model, ref, tok, plan, retain, *a, **kw):
        seen.append({d.id for d in retain})
        return real(model, ref, tok, plan, retain, *a, **kw)

    monkeypatch.setattr(runner, "apply_update", spy)
    over = {**LOOP, "strategy.objective": "graddiff", "loop": {**LOOP["loop"], "guard": {"probe_size": 1}}}
    eng = Engine(_cfg(tiny_prepared, tmp_path / "r", **over), progress=False)
    eng.run()
    eng.close()
    assert seen and all(ids == set(eng.guard.pool_ids) for ids in seen)
    assert not set(eng.guard.pool_ids) & eng.guard.probe_ids


def _resumed_bit_identical(prepared, tmp_path, over) -> tuple[dict, dict]:
    """:func:`_full_and_resumed`, asserting the resumed run's loop records and weights equal the uninterrupted one's;
    returns the latter's results and its ``loop_calibrated`` event."""
    res_full, res = _full_and_resumed(prepared, tmp_path, over)
    assert [r["loop"] for r in res["requests"]] == [r["loop"] for r in res_full["requests"]]
    wa = _weights(tmp_path / "full" / "checkpoints" / "ckpt-000004" / "model")
    wb = _weights(tmp_path / "c" / "checkpoints" / "ckpt-000004" / "model")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    events = Journal(tmp_path / "full" / "journal.jsonl", writer=False).events
    return res_full, next(e for e in events if e["event"] == "loop_calibrated")


def _full_and_resumed(prepared, tmp_path, over) -> tuple[dict, dict]:
    """One uninterrupted run (``full``) and one killed at position 3 then resumed (``c``); their results."""
    full = Engine(_cfg(prepared, tmp_path / "full", **over), progress=False)
    res_full = full.run()
    full.close()
    crashed = Engine(_cfg(prepared, tmp_path / "c", **over), progress=False)
    crashed._calibrate_loop()
    _crash_after(crashed, 3)
    del crashed
    resumed = Engine(_cfg(prepared, tmp_path / "c", **over), resume=True, progress=False)
    res = resumed.run()
    resumed.close()
    return res_full, res


def test_checks_spaced_by_progress_run_from_the_configuration_and_resume_bit_identical(tiny_prepared, tmp_path):
    """loop.check_ahead reaches every request's stop: each record lists its measures, the second check onwards at
    the step the two before it schedule; resume stays bit-identical."""
    from fit_unlearn.engine.update import next_check

    over = {**LOOP, "loop": {**LOOP["loop"], "check_ahead": 0.5, "max_steps": 30}, "checkpoint.every": 2}
    res_full, cal = _resumed_bit_identical(tiny_prepared, tmp_path, over)
    stop = stop_rule(cal["level"], _cfg(tiny_prepared, tmp_path / "x", **over).loop)
    assert stop.check_ahead == 0.5
    skipped = 0
    for r in res_full["requests"]:
        lp, steps = r["loop"], r["steps"]
        m = lp["measured"]
        assert m[0] == [0, lp["loss_before"]]
        if steps:  # a request at the target before any step is measured once
            assert m[-1] == [steps, lp["loss_after"]] and m[1][0] in (1, steps)
        for (s0, l0), (s1, l1), (s2, _) in zip(m, m[1:], m[2:], strict=False):
            assert s2 == min(next_check(stop, s1, l1, s0, l0), steps)
            skipped += s2 - s1 > 1
    assert skipped  # some check came more than one step after the one before


@pytest.mark.parametrize("trainable", ["full", "rows"])
def test_resume_with_the_loop_is_bit_identical(tiny_prepared, tmp_path, trainable):
    over = {**LOOP, "loop": {"enabled": True, "max_steps": 12, "lr": None, "guard": {"budget": 0.01, "max_steps": 3}}}
    over["update"] = {**LOOP["update"], "trainable": trainable}
    over["checkpoint.every"] = 2
    res_full, res = _full_and_resumed(tiny_prepared, tmp_path, over)
    assert res["applied_counts"] == res_full["applied_counts"]
    events = Journal(tmp_path / "c" / "journal.jsonl", writer=False).events
    assert sum(e["event"] == "loop_calibrated" for e in events) == 1  # read back on resume, not measured again
    wa = _weights(tmp_path / "full" / "checkpoints" / "ckpt-000004" / "model")
    wb = _weights(tmp_path / "c" / "checkpoints" / "ckpt-000004" / "model")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    a = [json.dumps(r["loop"], sort_keys=True) + json.dumps(r["guard"]["repair_steps"]) for r in res_full["requests"]]
    b = [json.dumps(r["loop"], sort_keys=True) + json.dumps(r["guard"]["repair_steps"]) for r in res["requests"]]
    assert a == b


def test_template_tokens_are_left_out_of_training_and_of_the_target(
    tiny_prepared, tmp_path, tiny_data, tiny_model, monkeypatch
):
    import fit_unlearn.engine.runner as runner
    from fit_unlearn.engine.update import IGNORE, common_tokens

    _, tok = tiny_model
    common = common_tokens(tok, tiny_data.retain + tiny_data.holdout, 0.5)
    assert tok.eos_token_id in common  # every document ends with it
    ex = forget_examples(tok, tiny_data.forget[0].text, (), UpdateConfig(), common)[1][0]
    scored = [t for t, lab in zip(ex.ids, ex.labels, strict=True) if lab != IGNORE]
    assert scored and not set(scored) & common and len(scored) < len(ex.ids)

    over = {**LOOP, "update": {**LOOP["update"], "template_max_df": 0.5}}
    eng = Engine(_cfg(tiny_prepared, tmp_path / "r", **over), progress=False)
    assert eng.common == common_tokens(tok, eng.data.retain_train + eng.data.holdout, 0.5)
    eng._calibrate_loop()  # before any request: the engine's model is theta_0
    cfg = eng.cfg.update
    assert eng._stop.target == nonmember_level(eng.model, tok, eng.data.holdout, True, cfg, 0.5, eng.common)["target"]
    assert eng._stop.target != nonmember_level(eng.model, tok, eng.data.holdout, True, cfg, 0.5)["target"]
    seen = []
    real = runner.apply_update
    monkeypatch.setattr(runner, "apply_update", lambda *a, **k: seen.append(k["common"]) or real(*a, **k))
    res = eng.run()
    eng.close()
    assert len(seen) == len(res["requests"]) and all(c is eng.common for c in seen)  # every update skips them


def test_without_the_stop_the_guard_still_runs(tiny_prepared, tmp_path):
    """loop.stop: false (an ablation): the open-loop recipe (update.epochs), the guard after each request."""
    over = {**LOOP, "loop": {**LOOP["loop"], "stop": False, "guard": {"budget": 0.01, "max_steps": 2}}}
    eng = Engine(_cfg(tiny_prepared, tmp_path / "r", **over), progress=False)
    res = eng.run()
    eng.close()
    reqs = res["requests"]
    assert all("loop" not in r and "guard" in r for r in reqs)
    assert all(r["steps"] == r["slices"] + r["qa_items"] for r in reqs)  # one epoch of the open recipe


def test_row_edits_on_a_tied_model_resume_bit_identical(tmp_path, tiny_data, tiny_tok):
    """A tied model (SmolLM2's kind): the engine unties it before restoring a checkpoint, whose output matrix is
    saved apart from the edited input rows; the resumed run ends with the uninterrupted run's weights."""
    from fit_unlearn.models import build_tiny_llama, save_model
    from fit_unlearn.prepare import PrepareConfig, prepare
    from fit_unlearn.training import FinetuneConfig

    model_dir = save_model(build_tiny_llama(tiny_tok, layers=2, hidden=64, seed=0, tied=True), tiny_tok, tmp_path / "m")
    prep = tmp_path / "prep"
    cfg = PrepareConfig(model=str(model_dir), recipe=FinetuneConfig(lr=1e-2, epochs=20, batch_size=4), probe_n=4)
    prepare(tiny_data, prep, cfg, progress=False)
    over = {**LOOP, "update": {**LOOP["update"], "trainable": "rows"}, "checkpoint.every": 2}
    _full_and_resumed(prep, tmp_path, over)
    wa = _weights(tmp_path / "full" / "checkpoints" / "ckpt-000004" / "model")
    wb = _weights(tmp_path / "c" / "checkpoints" / "ckpt-000004" / "model")
    assert "lm_head.weight" in wa and not torch.equal(wa["lm_head.weight"], wa["model.embed_tokens.weight"])
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_the_guard_measures_but_does_not_repair_row_edits(tiny_model, tiny_data):
    """repair=False (row edits): a drift past the budget is recorded, no weight moves."""
    import copy

    from fit_unlearn.engine.loop import Guard, GuardConfig

    model, tok = tiny_model
    guard = Guard(GuardConfig(probe_size=1, budget=0.05), tiny_data.retain, tok, UpdateConfig(), 1e-4)
    guard.calibrate(model, tok)
    guard.baseline *= 0.5  # as if the probe had drifted 100%
    before = copy.deepcopy(model.state_dict())
    rec = guard.check(model, copy.deepcopy(model), tok, 0, None, repair=False)
    assert rec["drift_before"] > 0.05 and rec["repair_steps"] == 0 and "repair_skipped" in rec
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    rec = guard.check(model, copy.deepcopy(model), tok, 0, None)
    assert rec["repair_steps"] > 0 or rec.get("repair_undone")


def test_the_guard_reruns_only_the_probe_sequences_that_hold_an_edited_row(tiny_model, tiny_data, monkeypatch):
    """Row edits (``per_sequence``): the probe's drift measured with ``rows`` is exactly the full measurement's, and
    only the probe sequences holding an edited token run again; ``rows=None`` (any weight may have moved) runs them
    all."""
    from fit_unlearn.engine import loop as loop_mod
    from fit_unlearn.engine.loop import Guard, GuardConfig
    from fit_unlearn.engine.rows import untie_embeddings
    from fit_unlearn.engine.update import example_loss_sums

    model, tok = tiny_model
    untie_embeddings(model)
    guard = Guard(GuardConfig(probe_size=3), tiny_data.retain, tok, UpdateConfig(), None, per_sequence=True)
    guard.calibrate(model, tok)
    ran = []
    monkeypatch.setattr(
        loop_mod, "example_loss_sums", lambda m, t, ex: ran.append(len(ex)) or example_loss_sums(m, t, ex)
    )
    assert guard.drift(model, tok, rows=[]) == 0.0 and ran == [3]
    held = next(t for t in guard.probe[0].ids if all(t not in e.ids for e in guard.probe[1:]))
    with torch.no_grad():
        model.model.embed_tokens.weight[held] = torch.randn(64, generator=torch.Generator().manual_seed(0)) * 10
    got = guard.drift(model, tok, rows=[held])
    assert ran == [3, 1] and got != 0.0
    assert guard._sums == example_loss_sums(model, tok, guard.probe)  # what a resumed run measures afresh
    assert guard.drift(model, tok) == got and ran == [3, 1, 3]
    assert guard.drift(model, tok, rows=[held]) == got and ran == [3, 1, 3, 1]


def test_the_runner_tells_the_guard_which_rows_a_request_edited(tiny_prepared, tmp_path, monkeypatch):
    """Under row edits the runner hands the guard the edited rows of a row-edited request, and nothing (measure
    every probe document) for a request that fell back to a weight update; both kinds occur in this stream."""
    from fit_unlearn.engine.loop import Guard

    seen, check = [], Guard.check

    def spy(self, *a, rows=None, **k):
        seen.append(rows)
        return check(self, *a, rows=rows, **k)

    monkeypatch.setattr(Guard, "check", spy)
    rows = {"min_rows": 2, "fallback": "full"}  # requests with a single own token are updated as full
    over = {
        **LOOP,
        "update": {**LOOP["update"], "trainable": "rows", "rows": rows},
        "loop": {**LOOP["loop"], "guard": {"enabled": True, "probe_size": 2}},
        "stream.limit": 6,
    }
    eng = Engine(_cfg(tiny_prepared, tmp_path / "r", **over), progress=False)
    reqs = eng.run()["requests"]
    eng.close()
    assert [r["rows"]["tokens"] if r["rows"]["edited"] else None for r in reqs] == seen
    assert any(x is None for x in seen) and any(x for x in seen), seen


def test_a_row_edit_short_of_its_target_escalates_to_a_weight_update(tiny_prepared, tmp_path, monkeypatch):
    """rows.escalate_steps: a row edit that spent its budget short of the target goes on as a weight update under the
    same stop rule (its own record, at most that many steps), the guard then measures every probe document and may
    repair; one that reached its target does not; resume stays bit-identical."""
    from fit_unlearn.engine.loop import Guard

    seen, check = [], Guard.check

    def spy(self, *a, rows=None, repair=True, **k):
        seen.append((rows, repair))
        return check(self, *a, rows=rows, repair=repair, **k)

    monkeypatch.setattr(Guard, "check", spy)
    over = {
        **LOOP,
        "update": {**LOOP["update"], "trainable": "rows", "rows": {"lr": 1e-3, "escalate_steps": 3}},
        "loop": {**LOOP["loop"], "max_steps": 4, "lr": 1e-3, "guard": {"enabled": True, "probe_size": 2}},
        "checkpoint.every": 2,
    }
    res_full, _ = _resumed_bit_identical(tiny_prepared, tmp_path, over)
    reqs = res_full["requests"]
    short = [r for r in reqs if r["loop"]["stopped"] == "budget"]
    assert short and all("escalated" in r for r in short)
    assert not any("escalated" in r for r in reqs if r["loop"]["stopped"] == "target")
    for r in short:
        esc = r["escalated"]
        assert 0 < esc["steps"] <= 3 and esc["loop"]["target"] == r["loop"]["target"]
        assert esc["loop"]["loss_before"] == pytest.approx(r["loop"]["loss_after"])
        assert esc["tensors_touched"] > 1 and r["seconds"] >= esc["seconds"]
    # the guard of an escalated request measures every probe document and may repair (first run of the three)
    assert [(None, True) if "escalated" in r else (r["rows"]["tokens"], False) for r in reqs] == seen[: len(reqs)]


@pytest.mark.parametrize("backtrack", [0, 2])
def test_an_undone_repair_step_halves_the_learning_rate_backtrack_times(tiny_model, tiny_data, monkeypatch, backtrack):
    """guard.backtrack: a step that does not lower the probe's loss is undone, and the repair tries again at
    half the learning rate, ``backtrack`` times, before it ends; the weights are left as the guard found them."""
    import copy

    from fit_unlearn.engine.loop import Guard, GuardConfig

    model, tok = tiny_model
    lrs, step = [], torch.optim.AdamW.step

    def spy(opt, *a, **k):
        lrs.append(opt.param_groups[0]["lr"])
        return step(opt, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", spy)
    cfg = GuardConfig(probe_size=1, budget=0.05, max_steps=10, lr=1e-3, backtrack=backtrack)
    guard = Guard(cfg, tiny_data.retain, tok, UpdateConfig(), None)
    guard.calibrate(model, tok)
    drifts = iter([1.0] + [2.0] * 20)  # the probe drifted 100%, and every repair step makes it worse
    monkeypatch.setattr(guard, "drift", lambda *a: next(drifts))
    before = copy.deepcopy(model.state_dict())
    rec = guard.check(model, copy.deepcopy(model), tok, 0, None)
    assert rec["repair_steps"] == 0 and rec["repair_undone"] == backtrack + 1 and rec["drift_after"] == 1.0
    assert lrs == [1e-3 / 2**i for i in range(backtrack + 1)]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # every try counts against the step budget
    guard.cfg = cfg.model_copy(update={"max_steps": 2, "backtrack": 5})
    drifts = iter([1.0] + [2.0] * 20)
    assert guard.check(model, copy.deepcopy(model), tok, 0, None)["repair_undone"] == 2


def test_a_scoped_repair_is_refused_for_merged_lora_updates(tiny_prepared, tmp_path):
    over = {**LOOP, "update": {**LOOP["update"], "trainable": "lora"}}
    over["loop"] = {**LOOP["loop"], "guard": {"scope": "update"}}
    with pytest.raises(ConfigError, match="cannot tell which weights a merged LoRA"):
        Engine(_cfg(tiny_prepared, tmp_path / "r", **over), progress=False)
    assert not (tmp_path / "r" / "journal.jsonl").exists()


def test_the_base_target_is_each_requests_own_loss_under_the_base_model(tiny_prepared, tmp_path, tiny_model_dir):
    """loop.target: base: each request stops at the base model's loss on the very sequences it is unlearned on
    (the base model read from the prepared recipe), recorded per request; resume stays bit-identical."""
    from fit_unlearn.models import load_model

    over = {
        **LOOP,
        "update": {**LOOP["update"], "template_max_df": 0.5},
        "loop": {**LOOP["loop"], "target": "base"},
        "checkpoint.every": 2,
    }
    res_full, cal = _resumed_bit_identical(tiny_prepared, tmp_path, over)
    assert cal["target_from"] == "base" and cal["base_model"] == str(tiny_model_dir) and cal["base_model_hash"]
    base, tok = load_model(tiny_model_dir)
    eng = Engine(_cfg(tiny_prepared, tmp_path / "x", **over), progress=False)
    docs, common, cfg = {d.id: d for d in eng.data.forget}, eng.common, eng.cfg.update
    eng.close()
    assert common
    loops = []
    for r in res_full["requests"]:
        d = docs[r["id"]]
        want = examples_loss(base, tok, forget_examples(tok, d.text, d.qa, cfg, common)[1])
        assert r["loop"]["target"] == pytest.approx(want, rel=1e-5) and r["loop"]["target_from"] == "base"
        assert r["loop"]["target"] != cal["level"]["target"]
        loops.append(r["loop"])
    assert len({lp["target"] for lp in loops}) == len(loops)  # one target per document, not one for the stream
    reached = [lp for lp in loops if lp["stopped"] == "target" and lp["steps"] > 0]
    assert reached and all(lp["loss_after"] >= lp["target"] > lp["loss_before"] for lp in reached)


@pytest.mark.parametrize("cap_quantile", [None, 0.2])
def test_the_both_target_is_the_higher_of_the_holdout_level_and_the_base_models_loss(
    tiny_prepared, tmp_path, tiny_model_dir, cap_quantile
):
    """loop.target: both: each request stops at max(theta_0's holdout level, the base model's loss on its own
    sequences); the receipt keeps both, and the target is neither alone on every request: uncapped, a first run
    reads theta_0's holdout losses and the base model's loss on each request, and a second takes the quantile that
    puts the holdout level among the latter (the tiny models' losses differ from one CPU to another)."""
    from fit_unlearn.models import load_model

    def run(out, q):
        over = {
            **LOOP,
            "update": {**LOOP["update"], "template_max_df": 0.5},
            "loop": {**LOOP["loop"], "target": "both", "quantile": q, "cap_quantile": cap_quantile},
        }
        eng = Engine(_cfg(tiny_prepared, tmp_path / out, **over), progress=False)
        res = eng.run()
        eng.close()
        events = Journal(tmp_path / out / "journal.jsonl", writer=False).events
        return eng, res, next(e for e in events if e["event"] == "loop_calibrated")

    eng, res, cal = run("r", 0.1)
    if cap_quantile is None:
        holdout, bases = sorted(cal["level"]["losses"]), sorted(r["loop"]["target_base"] for r in res["requests"])
        mid = (bases[0] + bases[-1]) / 2
        assert bases[0] < bases[-1] and holdout[0] < mid < holdout[-1]
        i = max(j for j in range(len(holdout) - 1) if holdout[j] <= mid)
        q = (i + (mid - holdout[i]) / (holdout[i + 1] - holdout[i])) / (len(holdout) - 1)  # numpy's linear quantile
        eng, res, cal = run("mid", q)
        assert cal["level"]["target"] == pytest.approx(mid)
    docs, common, cfg = {d.id: d for d in eng.data.forget}, eng.common, eng.cfg.update
    level = cal["level"]["target"]
    assert cal["target_from"] == "both" and cal["base_model"] == str(tiny_model_dir)
    base, tok = load_model(tiny_model_dir)
    capped = []
    for r in res["requests"]:
        d = docs[r["id"]]
        ex = forget_examples(tok, d.text, d.qa, cfg, common)[1]
        own = examples_loss(base, tok, ex, cap=cal["level"].get("cap"))
        assert r["loop"]["target_from"] == "both" and r["loop"]["target_base"] == pytest.approx(own, rel=1e-5)
        assert r["loop"]["target"] == pytest.approx(max(level, own), rel=1e-5) and r["loop"]["target_level"] == level
        capped.append(own < examples_loss(base, tok, ex))
    if cap_quantile is None:  # each source decides somewhere
        assert {r["loop"]["target"] == level for r in res["requests"]} == {True, False}
    else:  # the base model's loss is capped as the holdout level is (the cap bites here)
        assert any(capped)


def test_a_bad_base_model_is_a_clear_error_before_any_work(tiny_prepared, tmp_path, tiny_model_dir):
    from fit_unlearn.engine.loop import LoopConfig, base_model_path
    from fit_unlearn.models import model_hash

    over = {**LOOP, "loop": {**LOOP["loop"], "target": "base", "base_model": str(tmp_path / "nowhere")}}
    with pytest.raises(ConfigError, match="loop.base_model: .*nowhere: model directory not found"):
        Engine(_cfg(tiny_prepared, tmp_path / "r", **over), progress=False)
    assert not (tmp_path / "r" / "journal.jsonl").exists()
    over["loop"]["stop"] = False  # no stop, no target: the base model is neither needed nor checked
    Engine(_cfg(tiny_prepared, tmp_path / "s", **over), progress=False).close()
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"base_model": str(tiny_model_dir), "base_model_hash": model_hash(tiny_model_dir)}))
    assert base_model_path(LoopConfig(target="base"), recipe) == (tiny_model_dir, model_hash(tiny_model_dir))
    recipe.write_text(json.dumps({"base_model": str(tiny_model_dir), "base_model_hash": "0123"}))
    with pytest.raises(ConfigError, match="no longer holds the weights theta_0 was fine-tuned from"):
        base_model_path(LoopConfig(target="base"), recipe)
    recipe.write_text(json.dumps({}))
    with pytest.raises(ConfigError, match="does not record one; set loop.base_model"):
        base_model_path(LoopConfig(target="base"), recipe)
