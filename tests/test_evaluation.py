"""The honest protocol: retain-eval never anchors training, per-document gold references, T = forget set size.

Each of the first three tests fails on the protocol before it (utility scored on anchor items, F.D. against an
interpolated reference on the forgotten documents, T = the stream limit)."""

import json

import pytest

from fit_unlearn.engine import Engine
from fit_unlearn.errors import ConfigError
from fit_unlearn.evaluation import Reference, evaluate_model, evaluate_prepared
from fit_unlearn.metrics.reference import closeness, reference_at
from fit_unlearn.metrics.scores import composite, scores_from_items
from fit_unlearn.models import load_model
from fit_unlearn.prepare import load_split, prepared_data


def _cfg(prepared, out, **over):
    """test_engine's run config with a KL anchor (npo_kl, retain_match), 3 requests, one evaluation at t=3."""
    from test_engine import _cfg as engine_cfg

    base = {"stream.limit": 3, "strategy.objective": "npo_kl", "update.retain_batch_size": 2}
    base |= {"update.retain_match": True, "eval.every": 3, "checkpoint.every": 3}
    return engine_cfg(prepared, out, **{**base, **over})


def test_anchors_come_from_retain_train_and_utility_from_retain_eval(tiny_prepared, tmp_path):
    """Defect 1: every retain item that went through the KL anchor is retain-train; R is scored on retain-eval."""
    split = load_split(tiny_prepared)
    assert split.train_ids and split.eval_ids and not set(split.train_ids) & set(split.eval_ids)
    data = prepared_data(tiny_prepared)
    assert sorted(split.train_ids + split.eval_ids) == sorted(d.id for d in data.retain)

    eng = Engine(_cfg(tiny_prepared, tmp_path / "run"), progress=False)
    eng.run()
    anchored = {key[1] for key in eng.ref_cache._store if key[0] in ("retain", "retain-qa")}
    eng.close()
    assert anchored, "the KL term should have drawn retain anchors"
    assert anchored <= set(split.train_ids)
    ev = json.loads((tmp_path / "run" / "evals" / "eval-t00003.json").read_text())
    assert [it["id"] for it in ev["items"]["retain"]] == list(split.eval_ids)
    assert ev["retain"]["n_docs"] == len(split.eval_ids)


def test_strict_forget_degree_of_the_gold_models(tiny_prepared):
    """Defect 2: a model that does nothing (theta_0) scores strict F.D. ~0 at every t, the retain-only model
    scores 1, and theta_0's not-yet-requested documents are untouched (collateral 1)."""
    data = prepared_data(tiny_prepared)
    ref = Reference.load(tiny_prepared)
    T = len(data.forget)
    f0 = ref.score("theta0", "forget", [d.id for d in data.forget])["score"]
    fT = ref.score("retain_only", "forget", [d.id for d in data.forget])["score"]
    assert f0 > 2 * fT  # the tiny theta_0 memorised its forget set: the test is informative
    theta0, tok = load_model(tiny_prepared / "theta0")
    for t in (2, 5):
        res = evaluate_model(
            theta0, tok, forgotten=data.forget[:t], pending=data.forget[t:], retain=data.retain_eval, reference=ref
        )
        gold = ref.score("retain_only", "forget", [d.id for d in data.forget[:t]])["score"]
        assert res["forget_degree_strict"] == pytest.approx(closeness(res["forget"]["score"], gold), abs=1e-9)
        assert res["forget_degree_strict"] < 0.2
        if t == 2:  # the interpolated reference of the old protocol rewarded doing nothing at small t
            interp = reference_at(ref.score("theta0", "forget", [d.id for d in data.forget[:t]])["score"], gold, t, T)
            assert closeness(res["forget"]["score"], interp) > res["forget_degree_strict"] + 0.2
        assert res["collateral_forget"] == pytest.approx(1.0, abs=1e-6)
        assert res["t"] == t and res["T"] == T
    retain_only, tok = load_model(tiny_prepared / "retain_only")
    res = evaluate_model(
        retain_only, tok, forgotten=data.forget[:3], pending=data.forget[3:], retain=data.retain_eval, reference=ref
    )
    assert res["forget_degree_strict"] == pytest.approx(1.0, abs=1e-6)
    assert res["forget_degree_strict_paraphrase"] == pytest.approx(1.0, abs=1e-6)
    assert res["collateral_forget"] < 0.5  # the retain-only model does not know the pending documents either
    assert res["capital_probe"]["theta0"] == ref.probe["theta0"]


def test_T_is_the_forget_set_size_not_the_stream_limit(tiny_prepared, tmp_path):
    """Defect 3: a 3-request run of an 8-document forget set is scored at t = 3 of T = 8."""
    eng = Engine(_cfg(tiny_prepared, tmp_path / "run"), progress=False)
    res = eng.run()
    eng.close()
    e = res["evals"][-1]
    n_forget = len(prepared_data(tiny_prepared).forget)
    assert n_forget == 8 and (e["t"], e["T"]) == (3, 8)
    r = e["reference"]["retain"]
    assert r["at_t"] == pytest.approx(r["theta0"] + (r["retain_only"] - r["theta0"]) * 3 / 8)
    assert e["retain_utility"] == pytest.approx(closeness(e["retain"]["score"], r["at_t"]))
    # the not-yet-requested documents are scored against theta_0 and the whole set against the mixture
    assert e["pending"]["n_docs"] == 5 and e["collateral_forget"] is not None
    assert e["forget_degree_paper"] == pytest.approx(
        closeness(e["forget_all"]["score"], e["reference"]["forget_paper"]["mixture"])
    )
    for key in ("forget_degree_strict", "forget_degree_paper", "collateral_forget", "retain_utility"):
        assert 0 <= e[key] <= 1


def _item(i, p, r, a, para=None):
    it = {"id": i, "token_acc": a, "qa": [{"probability": p, "rouge_l": r}]}
    if para is not None:
        it["paraphrases"] = [{"probability": para[0], "rouge_l": para[1]}]
    return it


@pytest.mark.parametrize("t", [0, -1, 9])
def test_evaluate_prepared_refuses_a_t_outside_the_stream_before_loading_a_model(tiny_prepared, tmp_path, t):
    """t counts the forget documents requested so far: 1..T, checked before any model is loaded."""
    with pytest.raises(ConfigError) as e:
        evaluate_prepared(tiny_prepared, tmp_path / "no-model", t=t)
    assert str(e.value) == f"--t must be in 1..8 (the number of forget documents), got {t}"
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="not a prepared directory"):
        evaluate_prepared(tmp_path, "theta0")


def test_mixture_reference_ends_at_the_gold_models():
    """The paper F.D.'s reference: all theta_0 at t = 0, all retain-only at t = T, per document in between."""
    theta0 = [_item(f"f{i}", 0.9, 1.0, 0.95) for i in range(4)]
    retain_only = [_item(f"f{i}", 0.2, 0.1 * (i + 1), 0.5) for i in range(4)]
    ref = Reference(
        {
            "theta0": {"forget": theta0, "retain": []},
            "retain_only": {"forget": retain_only, "retain": []},
        }
    )
    ids = [f"f{i}" for i in range(4)]
    assert ref.mixture([], ids)["score"] == pytest.approx(composite(0.9, 1.0, 0.95))
    assert ref.mixture(ids, [])["score"] == pytest.approx(composite(0.2, 0.25, 0.5))
    # forgotten f0, f1 at the retain-only values, f2, f3 at theta_0's: means of the per-document values
    mid = ref.mixture(ids[:2], ids[2:])
    assert mid["probability"] == pytest.approx((0.2 + 0.2 + 0.9 + 0.9) / 4)
    assert mid["rouge_l"] == pytest.approx((0.1 + 0.2 + 1.0 + 1.0) / 4)
    assert mid["token_acc"] == pytest.approx((0.5 + 0.5 + 0.95 + 0.95) / 4)


def test_paraphrase_scores_from_items():
    s = scores_from_items([_item("a", 0.5, 0.5, 1.0, para=(0.25, 1.0)), _item("b", 0.5, 0.5, 1.0, para=(0.25, 0.0))])
    assert s["paraphrase"]["probability"] == pytest.approx(0.25)
    assert s["paraphrase"]["rouge_l"] == pytest.approx(0.5)
    assert s["paraphrase"]["score"] == pytest.approx(100 * (0.25 * 0.5) ** 0.5)
    assert "paraphrase" not in scores_from_items([_item("c", 0.5, 0.5, 1.0)])


def test_reference_json_holds_paraphrases_probe_and_the_split(tiny_prepared):
    ref = json.loads((tiny_prepared / "reference.json").read_text())
    split = load_split(tiny_prepared)
    assert ref["retain_eval_ids"] == list(split.eval_ids)
    assert all(it["paraphrases"] for it in ref["theta0"]["forget"])
    assert set(ref["paraphrase"]) == {"theta0", "retain_only"}
    assert ref["probe"]["n"] == 4 and 0 <= ref["probe"]["theta0"] <= 1
    # R_0 / R_T of the summary are on retain-eval only
    r0 = Reference(ref).score("theta0", "retain", list(split.eval_ids))["score"]
    assert ref["points"]["retain_0"] == pytest.approx(r0)


def test_a_reference_scored_before_whole_document_token_accuracy_is_refused(tiny_prepared, tmp_path):
    """reference.json of version 2 holds token accuracies cut at 256 tokens: comparing whole-document
    accuracies with them is refused, with the fix (prepare again: the gold models are rescored)."""
    from fit_unlearn.errors import ConfigError

    assert json.loads((tiny_prepared / "reference.json").read_text())["version"] == 3
    (tmp_path / "reference.json").write_text(json.dumps({"version": 2}))
    with pytest.raises(ConfigError, match=r"token accuracy cut at 256 tokens.*run `fit-unlearn prepare`"):
        Reference.load(tmp_path)


def test_a_prepared_directory_without_a_split_is_refused_with_the_fix(tiny_prepared, tmp_path):
    import shutil

    from fit_unlearn.errors import DataError

    old = tmp_path / "old"
    shutil.copytree(tiny_prepared / "data", old / "data")
    shutil.copy(tiny_prepared / "reference.json", old / "reference.json")
    with pytest.raises(DataError, match=r"split\.json: no retain-train / retain-eval split recorded.*prepare"):
        Engine(_cfg(old, tmp_path / "run"), progress=False)


def _copy_prepared(src, dst):
    import shutil

    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("theta0", "retain_only"))
    for m in ("theta0", "retain_only"):
        (dst / m).symlink_to(src / m)
    return dst


def test_a_split_that_does_not_divide_the_retain_documents_is_refused(tiny_prepared, tmp_path):
    from fit_unlearn.errors import DataError

    prep = _copy_prepared(tiny_prepared, tmp_path / "p")
    split = json.loads((prep / "split.json").read_text())
    for bad, msg in (
        ({**split, "eval_ids": split["eval_ids"] + split["train_ids"][:1]}, "in both parts"),
        ({**split, "eval_ids": split["eval_ids"][1:]}, "in neither part"),
        ({**split, "eval_ids": ["nope"]}, "unknown id"),
    ):
        (prep / "split.json").write_text(json.dumps(bad))
        with pytest.raises(DataError, match=f"split.json: the retain split does not divide.*{msg}"):
            prepared_data(prep)
    (prep / "split.json").write_text("{not json")
    with pytest.raises(DataError, match="not a valid split file"):
        prepared_data(prep)


def test_no_qa_preparation_refuses_qa_requests(tiny_prepared, tmp_path):
    from fit_unlearn.errors import ConfigError

    prep = _copy_prepared(tiny_prepared, tmp_path / "p")
    recipe = json.loads((prep / "recipe.json").read_text())
    (prep / "recipe.json").write_text(json.dumps({**recipe, "train_on_qa": False}))
    with pytest.raises(ConfigError, match="prepared with --no-qa.*include_qa: false"):
        Engine(_cfg(prep, tmp_path / "run"), progress=False)


def test_a_journal_from_before_the_split_does_not_resume(tiny_prepared, tmp_path):
    from fit_unlearn.errors import JournalError

    eng = Engine(_cfg(tiny_prepared, tmp_path / "run", **{"stream.limit": 1, "eval.every": None}), progress=False)
    eng.run()
    eng.close()
    journal = tmp_path / "run" / "journal.jsonl"
    lines = journal.read_text().splitlines()
    start = json.loads(lines[0])
    del start["retain_split"]
    journal.write_text("\n".join([json.dumps(start), *lines[1:]]) + "\n")
    with pytest.raises(JournalError, match="journaled before the retain-train / retain-eval split"):
        Engine(_cfg(tiny_prepared, tmp_path / "run", **{"stream.limit": 1, "eval.every": None}), resume=True)
