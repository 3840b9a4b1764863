"""Tables and summary lines rendered from small results dicts: the printed text holds the right numbers."""

import io

import pytest
from rich.console import Console

from fit_unlearn.engine.journal import Journal
from fit_unlearn.report import tables


def text(renderable, width: int = 200) -> str:
    console = Console(record=True, width=width, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def rows(out: str) -> dict[str, list[str]]:
    """The body rows of the table in ``out``: first cell -> the other cells, stripped."""
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in out.splitlines() if line.startswith("│")]
    return {c[0]: c[1:] for c in cells}


def _scores(p, r, a, score, **extra):
    return {"probability": p, "rouge_l": r, "token_acc": a, "score": score, **extra}


EVAL = {
    "t": 3,
    "T": 8,
    "forget": _scores(0.986, 1.0, 0.979, 98.82, paraphrase={"probability": 0.748, "rouge_l": 0.169, "score": 35.59}),
    "pending": _scores(0.98, 1.0, 0.952, 97.70),
    "forget_all": _scores(0.982, 1.0, 0.962, 98.12),
    "retain": _scores(0.989, 1.0, 0.936, 97.47),
    "forget_degree_strict": 0.0,
    "forget_degree_strict_paraphrase": None,
    "forget_degree_paper": 0.4541,
    "collateral_forget": 1.0,
    "retain_utility": 0.9968,
    "mia_auc_forget_vs_holdout": 0.75,
    "extraction_strength_forget": 0.393,
    "capital_probe": {"accuracy": 0.5, "theta0": 0.625},
    "reference": {
        "forget_strict": {"theta0": 98.82, "retain_only": 1.92},
        "collateral": {"theta0": 97.7},
        "forget_paper": {"mixture": 63.48},
        "retain": {"at_t": 97.71},
    },
    "downstream": {"fit_capitals": {"acc": 0.25}},
    "provenance": {"model": "prep/theta0"},
}


def test_eval_summary_shows_scores_references_and_degrees():
    out = text(tables.eval_summary(EVAL, "prep/eval-theta0.json"))
    assert "prep/theta0  (t=3/8)" in out
    table = rows(out)
    assert table["forgotten"] == ["0.986", "1.000", "0.979", "98.82", "1.92", "retain-only"]
    assert table["forgotten, paraphrased"] == ["0.748", "0.169", "n/a", "35.59", "n/a", "retain-only"]
    assert table["not yet requested"] == ["0.980", "1.000", "0.952", "97.70", "97.70", "theta0"]
    assert table["whole forget set"] == ["0.982", "1.000", "0.962", "98.12", "63.48", "mixture"]
    assert table["retain-eval"][-3:] == ["97.47", "97.71", "interpolated"]
    assert out.splitlines()[0] == "downstream fit_capitals: acc 0.250"
    assert (
        "F.D. strict 0.000   (paraphrased n/a)   F.D. paper 0.454   collateral 1.000   R.U. 0.997   "
        "capital probe 0.50 (theta0 0.62)   MIA AUC (forget vs holdout) 0.750   extraction strength 0.393"
    ) in out
    assert out.rstrip().endswith("results: prep/eval-theta0.json")


def test_run_summary_counts_requests_and_update_time():
    results = {
        "evals": [{"t": 2, "forget": {"score": 12.345}, "retain": {"score": 90.0}, "forget_degree_strict": 0.8}],
        "requests": [{"seconds": 1.5, "seconds_plan": 0.5}, {"seconds": 2.2}],
        "rejected": [{"id": "x"}],
        "final_model": "r/checkpoints/ckpt-000002/model",
    }
    out = text(tables.run_summary(results, "r"))
    assert rows(out)["2"] == ["12.35", "90.00", "0.800", "n/a", "n/a", "n/a", "n/a"]
    assert "2 requests applied (1 rejected), 4 s of updates; final model r/checkpoints/ckpt-000002/model" in out
    assert "results r/results.json" in out


def test_prepare_summary_and_attack_lines():
    report = {
        "base": {"forget_token_acc": 0.0041, "probe_accuracy": 0.5},
        "models": {
            "theta0": {"forget_token_acc": 0.962, "probe_accuracy": 0.25, "seconds": 4.0},
            "retain_only": {"forget_token_acc": 0.213, "probe_accuracy": 0.5, "seconds": 2.4},
        },
        "reference": {"forget_0": 98.123, "retain_0": 97.47, "forget_T": 1.92, "retain_T": 98.12},
        "paraphrase": {"theta0": {"score": 34.57}, "retain_only": {"score": 0.37}},
        "retain_split": {"retain_train": 3, "retain_eval": 2, "file": "p/split.json"},
    }
    out = text(tables.prepare_summary(report, "p"))
    table = rows(out)
    assert table["base"] == ["0.004", "0.50", "", "", ""]
    assert table["theta0"] == ["0.962", "0.25", "98.12", "34.57", "97.47"]
    assert table["retain_only"] == ["0.213", "0.50", "1.92", "0.37", "98.12"]
    assert "retain split: 3 retain-train (anchors) / 2 retain-eval (utility), p/split.json" in out
    assert "theta0 34.57 vs retain-only 0.37 (gap +34.20)" in out
    assert "training time 6 s; report: p/prepare.json" in out
    quant = {
        "method": "rtn",
        "models": {"unlearned": {"fp": {"forget_score": 10.0, "retain_score": 90.0}}},
        "recovery": {"int4": 0.12345, "int8": None},
    }
    out = text(tables.quantize_summary(quant, "r/attack-quantize.json"))
    assert "quantization attack (rtn)" in out and "10.00" in out and "90.00" in out
    assert "recovery of the unlearned model: int4 0.123, int8 n/a; results r/attack-quantize.json" in out


def test_receipt_lists_dropped_chunks_layers_and_objective():
    events = [
        {"event": "received", "id": "a", "position": 4},
        {
            "event": "applied",
            "id": "a",
            "position": 4,
            "record": {
                "objective": "npo",
                "steps": 3,
                "loss_first": 1.25,
                "loss_last": None,
                "params_touched": 1234567,
                "seconds": 0.5,
                "receipt": {
                    "filter": {
                        "chunks": 5,
                        "candidates": 2,
                        "dropped": [{"chunk": "Age: 33", "s_star": 0.95, "dL": 0.01}],
                        "kept_fraction": 0.8,
                        "memory_size": 40,
                    },
                    "layers": {"k": 2, "layers": [3, 1], "layer_scores": [0.1, 0.2, 0.3, 0.4]},
                    "seconds": {"filter": 0.25},
                },
            },
        },
    ]
    out = text(tables.receipt(events))
    assert out.splitlines()[0] == "received position 4 "
    assert "request a (stream position 4): applied" in out
    assert "filter: 5 chunks, 2 candidates (s* >= tau), 1 dropped, kept fraction 0.80, memory 40 chunks" in out
    assert "dropped 'Age: 33'  s*=0.950  dL=0.010" in out
    assert "layers: top 2 of 4 -> 3:0.400, 1:0.200" in out
    assert "update: objective npo, 3 steps, loss 1.250 -> n/a, 1,234,567 parameters trainable" in out
    assert "time: filter 0.25s, update 0.50s" in out


@pytest.mark.parametrize("markup", ["[bold]request x[/bold] (stream position 3): applied", "results: /tmp/a/b.json"])
def test_lines_are_styled_as_console_print_styles_a_string(markup):
    def styled(obj):
        console = Console(record=True, width=120, file=io.StringIO(), force_terminal=True, color_system="truecolor")
        console.print(obj)
        return console.export_text(styles=True)

    assert styled(tables.line(markup)) == styled(markup)


def test_data_stats_table_and_synth_line():
    stats = {
        "source": "d",
        "domains": ["code", "personal"],
        "splits": {
            "forget": {"domains": {"personal": 3, "code": 1}, "documents": 4, "qa_pairs": 5, "mean_chars": 249.4},
            "holdout": {"domains": {"code": 2}, "documents": 2, "qa_pairs": 2, "mean_chars": 100.6},
        },
    }
    table = rows(text(tables.stats_table(stats)))
    assert table["forget"] == ["1", "3", "4", "5", "249"] and table["holdout"] == ["2", "0", "2", "2", "101"]
    synth = {"out": "d", "forget": 8, "retain": 4, "holdout": 0, "max_jaccard": 0.1016, "data_hash": "abc"}
    assert text(tables.synth_summary(synth)).strip() == (
        "wrote 8 forget, 4 retain, 0 holdout documents to d (max 3-gram Jaccard 0.102, data hash abc)"
    )


# ---- the report of run and bench directories ------------------------------------------------------------


def md_table(md: str, first_column: str) -> list[list[str]]:
    """The body rows of the markdown table whose header starts with ``| first_column |``."""
    lines = md.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith(f"| {first_column} |"))
    rows = []
    for ln in lines[start + 2 :]:
        if not ln.startswith("|"):
            break
        rows.append([c.strip() for c in ln.strip("|").split(" | ")])
    return [[c.strip() for c in lines[start].strip("|").split(" | ")]] + rows


def parse(cell: str) -> tuple[float, float | None]:
    """``mean ± std`` (or a single value) back into numbers."""
    mean, _, std = cell.partition(" ± ")
    return float(mean), float(std) if std else None


def agg(values):
    import statistics

    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def cost_of(record: dict) -> float:
    """A request's whole cost as its record timed it: plan, update and the closed loop's guard."""
    return record.get("seconds", 0.0) + record["seconds_plan"] + ((record.get("guard") or {}).get("seconds") or 0.0)


def runs_json(bench):
    import json

    from fit_unlearn.bench import read_manifest

    out = {}
    for r in read_manifest(bench)["runs"]:
        out.setdefault(r["method"], []).append(json.loads((bench / r["dir"] / "results.json").read_text()))
    return out


@pytest.mark.slow  # the tiny bench: ~20 s once per session
def test_report_draws_every_plot_and_its_tables_equal_the_runs_json(tiny_bench, tmp_path):
    from fit_unlearn.layout import ReportDir
    from fit_unlearn.report import render_report
    from fit_unlearn.report.plots import PLOTS

    out = render_report([tiny_bench], tmp_path / "rep")
    rd = ReportDir(tmp_path / "rep")
    assert out == rd.html and rd.markdown.is_file() and rd.data.is_file()
    md, page = rd.markdown.read_text(), rd.html.read_text()
    for stem in PLOTS:
        png = rd.plot(stem)
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000, stem
        assert f"]({stem}.png)" in md and f"src='{stem}.png'" in page
    assert "Plots not drawn" not in md

    results = runs_json(tiny_bench)
    head, *rows = md_table(md, "method | t/T")
    col = {name: i for i, name in enumerate(head)}
    assert len(rows) == 6  # fit, fit-paper and npo at t = 2 and 4
    for row in rows:
        method, t = row[0], int(row[1].split("/")[0])
        evals = [next(e for e in res["evals"] if e["t"] == t) for res in results[method]]
        assert row[col["seeds"]] == "2"
        for column, key in (
            ("strict F.D.", "forget_degree_strict"),
            ("R.U.", "retain_utility"),
            ("paper F.D.", "forget_degree_paper"),
            ("MIA AUC", "mia_auc_forget_vs_holdout"),
        ):
            mean, std = parse(row[col[column]])
            want_mean, want_std = agg([e[key] for e in evals])
            assert mean == pytest.approx(want_mean, abs=5e-4) and std == pytest.approx(want_std, abs=5e-4), column

    head, *rows = md_table(md, "method | t | F forgotten")
    for row in rows:
        evals = [next(e for e in res["evals"] if e["t"] == int(row[1])) for res in results[row[0]]]
        assert parse(row[2])[0] == pytest.approx(agg([e["forget"]["score"] for e in evals])[0], abs=5e-3)
        assert parse(row[5])[0] == pytest.approx(agg([e["pending"]["score"] for e in evals])[0], abs=5e-3)

    head, *rows = md_table(md, "method | seeds | s/request")
    by_method = {r[0]: dict(zip(head, r, strict=True)) for r in rows}
    for method, ress in results.items():
        per_run = [agg([cost_of(q) for q in res["requests"]])[0] for res in ress]
        assert parse(by_method[method]["s/request"])[0] == pytest.approx(agg(per_run)[0], abs=5e-3)
    ratios, calibration = [], []
    for seed, (fit, npo) in enumerate(zip(results["fit"], results["npo"], strict=True)):
        cost = {m: {q["id"]: cost_of(q) for q in r["requests"]} for m, r in (("f", fit), ("n", npo))}
        assert cost["f"].keys() == cost["n"].keys()  # the same requests for one seed
        # FIT's one-off calibration before the stream is part of its cost (NPO has none)
        events = Journal(tiny_bench / "runs" / f"fit-s{seed}" / "journal.jsonl", writer=False).events
        once = sum(e["seconds"] for e in events if e["event"] in ("calibrated", "loop_calibrated"))
        assert once > 0
        calibration.append(once)
        ratios.append((sum(cost["f"].values()) + once) / sum(cost["n"].values()))
    assert parse(by_method["fit"]["ratio to NPO"]) == pytest.approx(agg(ratios), abs=5e-3)
    assert parse(by_method["fit"]["one-off s"])[0] == pytest.approx(agg(calibration)[0], abs=0.05)
    assert by_method["npo"]["ratio to NPO"] == "1" and parse(by_method["npo"]["one-off s"])[0] == 0

    # row edits live in the token embeddings: the int4 attack on FIT's default rounds them too, not NPO's
    assert all(res["attacks"]["quantize"]["embeddings"] for res in results["fit"])
    assert not any(res["attacks"]["quantize"]["embeddings"] for res in results["npo"] + results["fit-paper"])
    head, *rows = md_table(md, "method | attack")
    for row in rows:
        recs = [res["attacks"]["quantize"]["recovery"]["int4"] for res in results[row[0]]]
        assert row[1] == "int4" and parse(row[-1])[0] == pytest.approx(agg(recs)[0], abs=5e-4)

    head, *rows = md_table(md, "method | strict F.D. >= 0.9")
    targets = {r[0]: dict(zip(head, r, strict=True)) for r in rows}
    for method, ress in results.items():
        fds = [(e["forget_degree_strict"], e["t"]) for res in ress for e in res["evals"]]
        worst, at = min(fds)
        cell = targets[method]["strict F.D. >= 0.9"]
        assert cell == (f"met: {worst:.3f}" if worst >= 0.9 else f"NOT met: {worst:.3f} (t {at})"), method
    for method, ress in results.items():
        int4 = max(res["attacks"]["quantize"]["recovery"]["int4"] for res in ress)
        fp = agg([res["attacks"]["quantize"]["models"]["unlearned"]["fp"]["forget_score"] for res in ress])[0]
        theta0 = agg([res["evals"][-1]["reference"]["forget_strict"]["theta0"] for res in ress])[0]
        cell = targets[method]["int4 recovery <= 0.1"]
        if theta0 - fp < 10:  # the tiny models forget a few points: no recovery ratio is read off them
            assert cell == f"n/a: only {theta0 - fp:.1f} points of F forgotten", method
        else:
            assert cell.endswith(f"{int4:.3f}"), method
    assert targets["npo"]["relearn recovery <= 0.3"] == "n/a"  # no relearning attack in the tiny bench

    # F's parts on the forgotten documents, next to the retain-only model's, at every checkpoint
    head, *rows = md_table(md, "method | t | p (retain-only)")
    assert len(rows) == sum(len(ress[0]["evals"]) for ress in results.values())
    for row in rows:
        e = next(e for e in results[row[0]][0]["evals"] if str(e["t"]) == row[1])
        want = [
            agg([ev["forget"][k] for res in results[row[0]] for ev in res["evals"] if ev["t"] == e["t"]])[0]
            for k in ("probability", "rouge_l", "token_acc")
        ]
        ref = [
            agg(
                [
                    ev["reference"]["forget_parts"]["retain_only"][k]
                    for res in results[row[0]]
                    for ev in res["evals"]
                    if ev["t"] == e["t"]
                ]
            )[0]
            for k in ("probability", "rouge_l", "token_acc")
        ]
        for cell, v, r, tol in zip(row[2:], want, ref, (5e-5, 5e-4, 5e-4), strict=True):
            got, gold = cell.split(" (")
            assert parse(got)[0] == pytest.approx(v, abs=tol) and parse(gold.rstrip(")"))[0] == pytest.approx(
                r, abs=tol
            )
    head, *rows = md_table(md, "method | requests (all seeds)")
    objectives = {r[0]: r[2] for r in rows}
    assert objectives["npo"] == "npo 8"
    fit_objectives = [q["objective"] for res in results["fit"] for q in res["requests"]]
    assert objectives["fit"] == ", ".join(f"{o} {fit_objectives.count(o)}" for o in sorted(set(fit_objectives)))
    assert "tests/conftest.py tiny_bench" in md  # the bench's command

    from fit_unlearn.cli import main

    # bad thresholds on a real bench: one line, and no report written
    assert main(["report", str(tiny_bench), "--out", str(tmp_path / "bad"), "--targets", '{"mia": 0.5}']) == 2
    assert not (tmp_path / "bad").exists()


@pytest.mark.slow  # the tiny bench: ~20 s once per session
def test_report_of_one_run_and_of_an_unfinished_run(tiny_bench, tmp_path, capsys):
    import json
    import shutil

    from fit_unlearn.cli import main
    from fit_unlearn.summary import summarise

    run = tmp_path / "fit-s0"
    shutil.copytree(tiny_bench / "runs" / "fit-s0", run)
    res = json.loads((run / "results.json").read_text())
    assert main(["report", str(run)]) == 0
    out = capsys.readouterr().out.replace("\n", "")  # long paths wrap at the console's width
    assert f"report: {run / 'report' / 'report.html'}" in out and "strict F.D. / R.U. per checkpoint" in out
    md = (run / "report" / "report.md").read_text()
    head, *rows = md_table(md, "method | t/T")
    assert [parse(r[3]) for r in rows] == [
        (pytest.approx(e["forget_degree_strict"], abs=5e-4), None) for e in res["evals"]
    ]
    # a stopped run (no results.json) is read from its journal: the same evaluations, marked unfinished
    (run / "results.json").unlink()
    s = summarise([run])
    (r,) = s["runs"]
    assert not r["finished"] and [e["t"] for e in r["evals"]] == [2, 4]
    for got, want in zip(r["evals"], res["evals"], strict=True):
        assert {k: got[k] for k in ("forget_degree_strict", "retain_utility")} == {
            k: want[k] for k in ("forget_degree_strict", "retain_utility")
        }
    assert [q["id"] for q in r["requests"]] == [q["id"] for q in res["requests"]]
    assert s["methods"]["fit-s0"]["evals"][0]["eval_seconds"]["mean"] > 0


def test_report_refuses_what_is_not_a_run_or_a_bench(tmp_path, capsys):
    from fit_unlearn.cli import main

    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "neither a run directory (no journal.jsonl) nor a bench directory (no bench.json)" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert main(["report", str(tmp_path / "none")]) == 2
    assert "no such directory" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "a"), str(tmp_path / "b")]) == 2
    assert "pass --out DIR" in capsys.readouterr().err


def test_targets_hold_only_for_every_seed_at_every_checkpoint():
    from fit_unlearn.summary import Targets, aggregate, check_targets

    method = {
        "evals": [
            {
                "t": 20,
                "forget_degree_strict": aggregate([0.95, 0.91]),
                "retain_utility": aggregate([0.97, 0.96]),
                "mia_auc_forget_vs_holdout": aggregate([0.50, 0.62]),
                "capital_probe_delta": aggregate([0.0, -0.05]),
                "F_forgotten_theta0": aggregate([98.0, 98.0]),
            },
            {  # the mean over seeds (0.94) would pass; one seed does not
                "t": 40,
                "forget_degree_strict": aggregate([0.89, 0.99]),
                "retain_utility": aggregate([0.99, 0.98]),
                "mia_auc_forget_vs_holdout": aggregate([0.40, 0.45]),
                "capital_probe_delta": None,
                "F_forgotten_theta0": aggregate([97.0, 97.0]),
            },
        ],
        "cost": {"ratio_to_npo": aggregate([0.9, 1.1])},
        "attacks": {
            "quantize": {"int4": {"recovery": aggregate([0.05, 0.02]), "forget_fp": aggregate([10.0, 12.0])}},
            "relearn_recovery": None,
        },
    }
    got = {c["target"]: c for c in check_targets(method, Targets())}
    assert [c["target"] for c in check_targets(method, Targets())] == [
        "strict F.D.",
        "R.U.",
        "MIA AUC",
        "capital probe vs theta_0",
        "int4 recovery",
        "relearn recovery",
        "cost vs NPO",
    ]
    assert (got["strict F.D."]["met"], got["strict F.D."]["worst"], got["strict F.D."]["at"]) == (False, 0.89, 40)
    assert (got["R.U."]["met"], got["R.U."]["worst"]) == (True, 0.96)
    assert (got["MIA AUC"]["met"], got["MIA AUC"]["worst"], got["MIA AUC"]["at"]) == (False, 0.62, 20)
    assert got["capital probe vs theta_0"]["met"] is False and got["capital probe vs theta_0"][
        "worst"
    ] == pytest.approx(0.05)
    assert (got["int4 recovery"]["met"], got["int4 recovery"]["worst"]) == (True, 0.05)
    assert got["relearn recovery"]["met"] is None and got["relearn recovery"]["worst"] is None
    assert (got["cost vs NPO"]["met"], got["cost vs NPO"]["worst"]) == (False, 1.1)
    looser = {c["target"]: c["met"] for c in check_targets(method, Targets(forget_degree=0.85, capital_probe=0.05))}
    assert looser["strict F.D."] and looser["capital probe vs theta_0"]
    # a model that forgot under 10 points of F: its int4 recovery means nothing (as the demo's summary says)
    method["attacks"]["quantize"]["int4"]["forget_fp"] = aggregate([90.0, 89.0])
    int4 = next(c for c in check_targets(method, Targets()) if c["target"] == "int4 recovery")
    assert int4["met"] is None and int4["gap"] == pytest.approx(7.5) and int4["rule"] == "<= 0.1"


def test_bad_targets_are_one_line_before_anything_is_written(tmp_path, capsys):
    from fit_unlearn.cli import main

    for arg, msg in (
        ('{"forget_degre": 0.8}', "--targets: invalid configuration: forget_degre: unknown field"),
        ('{"mia_auc": 2}', "--targets: invalid configuration: mia_auc: Input should be less than or equal to 1"),
        ("{bad", "--targets: not valid JSON"),
    ):
        assert main(["report", str(tmp_path), "--out", str(tmp_path / "rep"), "--targets", arg]) == 2
        err = capsys.readouterr().err.strip()
        assert msg in err and len(err.splitlines()) == 1
        assert not (tmp_path / "rep").exists()


def test_request_rows_phases_and_filtered_fraction():
    from fit_unlearn.summary import aggregate, request_row

    rec = {
        "id": "a",
        "position": 3,
        "objective": "npo_kl",
        "seconds": 2.0,
        "seconds_plan": 0.75,
        "guard": {"seconds": 0.25},
        "peak_memory_bytes": 2**20,
        "receipt": {
            "filter": {"chars": 200, "kept_chars": 150, "kept_fraction": 0.5},
            "layers": {"layers": [1, 3], "layer_scores": [0.1, 0.2, 0.3, 0.4]},
            "importance": {"importance": 7.5, "thresholds": [9.0, 6.0], "objective": "npo"},
            "seconds": {"filter": 0.5, "attribution": 0.125, "importance": 0.125},
        },
    }
    row = request_row(rec)
    assert row["phases"] == {"filter": 0.5, "attribution": 0.125, "importance": 0.125, "update": 2.0, "guard": 0.25}
    assert row["seconds"] == 3.0 and row["filtered_fraction"] == 0.25  # characters, not chunks
    assert (row["layers"], row["n_layers"], row["importance"]) == ([1, 3], 4, 7.5)
    redundant = request_row(
        {"redundant": True, "seconds_plan": 0.5, "receipt": {"filter": {"chars": 9, "kept_chars": 0}}}
    )
    assert redundant["phases"] == {"plan": 0.5} and redundant["filtered_fraction"] == 1.0 and redundant["redundant"]
    older = request_row({"seconds": 1.0, "receipt": {"filter": {"kept_fraction": 0.75}}})  # before chars were kept
    assert older["filtered_fraction"] == 0.25
    assert aggregate([1.0, None, 3.0]) == {"mean": 2.0, "std": pytest.approx(2**0.5), "n": 2, "values": [1.0, 3.0]}
    assert aggregate([None]) is None and aggregate([4.0])["std"] is None


@pytest.mark.slow  # uses the tiny bench (built once per session)
def test_a_damaged_attack_file_is_one_line_naming_it(tiny_bench, tmp_path):
    import shutil

    from fit_unlearn.errors import ConfigError
    from fit_unlearn.layout import BenchDir
    from fit_unlearn.summary import read_run

    run = tmp_path / "npo-s0"
    shutil.copytree(BenchDir(tiny_bench).run("npo", 0).root, run)
    (run / "attack-relearn.json").write_text('{"recovery": ')  # a kill mid-write by an older version
    with pytest.raises(ConfigError, match=r"attack-relearn.json: not valid JSON .*fit-unlearn attack relearn"):
        read_run(run)


@pytest.mark.slow  # uses the tiny bench (built once per session)
def test_runs_of_two_benches_are_never_averaged_as_seeds_of_one_method(tiny_bench, tmp_path):
    import shutil

    from fit_unlearn.summary import summarise

    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(tiny_bench, a)
    shutil.copytree(tiny_bench, b)
    s = summarise([a, b])
    assert sorted(s["methods"]) == ["a/fit", "a/fit-paper", "a/npo", "b/fit", "b/fit-paper", "b/npo"]
    assert all(len(m["seeds"]) == 2 for m in s["methods"].values())
    # each bench's FIT is compared with that bench's NPO
    assert s["methods"]["a/fit"]["cost"]["ratio_to_npo"] == summarise([a])["methods"]["fit"]["cost"]["ratio_to_npo"]
    assert s["methods"]["a/fit"]["cost"]["ratio_to_npo"] is not None


def test_receipt_shows_the_rows_edited_the_closed_loop_and_the_guard():
    record = {
        "objective": "ga",
        "steps": 15,
        "loss_first": -0.2,
        "loss_last": -6.0,
        "params_touched": 1728,
        "seconds": 1.0,
        "rows": {"edited": True, "tokens": [5, 9, 11], "decoded": [" Joan", " KS", "ne"], "shared_with": 1},
        "loop": {"loss_before": 0.147, "loss_after": 4.97, "target": 4.882, "steps": 15, "stopped": "target"},
        "guard": {"drift_before": 0.12, "repair_steps": 2, "drift_after": 0.01},
    }
    out = text(tables.receipt([{"event": "applied", "id": "a", "position": 1, "record": record}]))
    assert "rows: 3 input-embedding rows edited ' Joan', ' KS', 'ne' (rarest tokens: each in at most 1 other" in out
    assert "closed loop: loss 0.147 -> 4.970, target 4.882, 15 steps, stopped: target" in out
    assert "guard: probe drift +12.0%, 2 repair steps -> +1.0%" in out
    q = "What is the address of Stephanie U. Miller?"
    record["rows"]["covered"] = [{"question": q, "token": 9, "decoded": " Stephanie", "holders": 2}]
    out = text(tables.receipt([{"event": "applied", "id": "a", "position": 1, "record": record}]))
    assert f"+ ' Stephanie' (2 other documents hold it) for the question '{q}'" in out
    record["rows"] = {"edited": False, "tokens": [], "decoded": [], "shared_with": 0}
    out = text(tables.receipt([{"event": "applied", "id": "a", "position": 1, "record": record}]))
    assert "rows: the request has no token of its own; updated as trainable: full" in out
    record["loop"].update(target_from="both", target_level=4.882, target_base=3.5)
    out = text(tables.receipt([{"event": "applied", "id": "a", "position": 1, "record": record}]))
    assert "target 4.882 (the higher of the holdout level 4.882 and the base model's loss 3.500), 15 steps" in out
    record["loop"].update(cap=6.634, target_from="holdout")
    out = text(tables.receipt([{"event": "applied", "id": "a", "position": 1, "record": record}]))
    assert "closed loop: loss 0.147 -> 4.970 (each token's loss capped at 6.63), target 4.882, 15 steps" in out
    record["loop"]["measured"] = [[0, 0.147], [2, 1.0], [6, 3.0], [14, 4.5], [15, 4.97]]
    out = text(tables.receipt([{"event": "applied", "id": "a", "position": 1, "record": record}]))
    assert "target 4.882, 15 steps (4 checks), stopped: target" in out
    record["escalated"] = {
        "objective": "npo",
        "steps": 10,
        "loop": {"loss_before": 4.97, "loss_after": 5.2, "stopped": "budget"},
    }
    out = text(tables.receipt([{"event": "applied", "id": "a", "position": 1, "record": record}]))
    assert "escalated to a weight update (npo): loss 4.970 -> 5.200, 10 steps, stopped: budget" in out
