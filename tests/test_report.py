"""Tables and summary lines rendered from small results dicts: the printed text holds the right numbers."""

import io

import pytest
from rich.console import Console

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
