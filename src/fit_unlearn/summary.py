"""Run and bench directories read back as data and summarised per method: what a report renders.

Reading a run directory (``layout.RunDir``) takes only what the engine wrote: ``results.json`` when the
run finished, else its journal (the evaluations and request records journaled so far: a stopped or killed
run is read as far as it got); the recovery attacks (in results.json, or the ``attack-<kind>.json`` files of
``fit-unlearn attack``); the configuration and provenance the run recorded.  Nothing is evaluated again.

Per request (:func:`request_row`): seconds per phase (FIT's filter / attribution / importance from its
receipt, a strategy's plan otherwise; the update; the closed loop's guard), the fraction of the request's
text the filter dropped, the layers trained, the importance and objective chosen, peak memory.

Grouping (:func:`summarise`): runs are grouped by method (a bench's method name, else the run directory's
name), and the seeds of one method give, at each checkpoint t and for each metric, the mean and the sample
standard deviation (n - 1; none for one seed) over the seeds that have a value there.  Cost per method:
mean seconds per request and per phase (mean over a run's requests, then over seeds), the largest peak
memory, and the ratio to NPO on the same requests: for each seed with an ``npo`` run, the method's total
seconds over the requests both runs applied divided by NPO's over the same requests.

Targets (:class:`Targets`, :func:`check_targets`): per method, whether each quality target holds on what the runs
measured (every seed at every checkpoint for the per-checkpoint ones), with the worst value; ``None`` where
nothing measured it.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from pydantic import Field

from fit_unlearn.errors import ConfigError
from fit_unlearn.layout import BenchDir, CheckpointDir, RunDir
from fit_unlearn.schema import Section

#: metric name -> where it is in an evaluation summary (``evals`` of results.json, the journal's ``eval``)
EVAL_METRICS: dict[str, tuple[str, ...]] = {
    "forget_degree_strict": ("forget_degree_strict",),
    "forget_degree_paper": ("forget_degree_paper",),
    "retain_utility": ("retain_utility",),
    "collateral_forget": ("collateral_forget",),
    "forget_degree_strict_paraphrase": ("forget_degree_strict_paraphrase",),
    "forget_degree_retrain": ("forget_degree_retrain",),
    "forget_degree_retrain_paraphrase": ("forget_degree_retrain_paraphrase",),
    "mia_auc_forget_vs_holdout": ("mia_auc_forget_vs_holdout",),
    "extraction_strength_forget": ("extraction_strength_forget",),
    "F_forgotten": ("forget", "score"),
    "F_forgotten_retain_only": ("reference", "forget_strict", "retain_only"),
    "F_forgotten_theta0": ("reference", "forget_strict", "theta0"),
    "F_forgotten_retrain": ("reference", "forget_retrain"),
    "F_forgotten_paraphrase": ("forget", "paraphrase", "score"),
    "p_forgotten": ("forget", "probability"),
    "rouge_forgotten": ("forget", "rouge_l"),
    "acc_forgotten": ("forget", "token_acc"),
    "p_forgotten_retain_only": ("reference", "forget_parts", "retain_only", "probability"),
    "rouge_forgotten_retain_only": ("reference", "forget_parts", "retain_only", "rouge_l"),
    "acc_forgotten_retain_only": ("reference", "forget_parts", "retain_only", "token_acc"),
    "F_pending": ("pending", "score"),
    "F_pending_theta0": ("reference", "collateral", "theta0"),
    "R": ("retain", "score"),
    "R_reference": ("reference", "retain", "at_t"),
    "capital_probe": ("capital_probe", "accuracy"),
    "capital_probe_theta0": ("capital_probe", "theta0"),
    "capital_probe_delta": ("capital_probe", "delta_vs_theta0"),
    "eval_seconds": ("seconds",),
}

#: the plan phases a strategy's receipt may time (FIT), in the order they run
PLAN_PHASES = ("filter", "attribution", "importance")


def dig(d, path: Sequence[str]):
    """``d[path[0]][path[1]]...``, or None where a key is missing or a value is None."""
    for k in path:
        if not isinstance(d, dict) or d.get(k) is None:
            return None
        d = d[k]
    return d


def eval_metrics(e: dict) -> dict:
    """The metrics of one evaluation summary (:data:`EVAL_METRICS`, then ``downstream.<task>.<metric>``)."""
    out = {name: dig(e, path) for name, path in EVAL_METRICS.items()}
    for task, vals in (e.get("downstream") or {}).items():
        for metric, v in vals.items():
            if isinstance(v, int | float):
                out[f"downstream.{task}.{metric}"] = v
    return out


# ---- one request -----------------------------------------------------------------------------------------


def request_phases(record: dict) -> dict[str, float]:
    """Seconds per phase of one request's record: the plan (FIT: filter, attribution, importance, as its
    receipt timed them), the update, the closed loop's guard (probe and repair)."""
    receipt = record.get("receipt") or {}
    timed = receipt.get("seconds") or {}
    phases = {p: float(timed[p]) for p in PLAN_PHASES if p in timed}
    if not phases and record.get("seconds_plan") is not None:
        phases["plan"] = float(record["seconds_plan"])
    if not record.get("redundant"):
        phases["update"] = float(record.get("seconds", 0.0))
    guard = record.get("guard") or {}
    if guard.get("seconds") is not None:
        phases["guard"] = float(guard["seconds"])
    return phases


def request_seconds(record: dict) -> float:
    """The whole cost of a request: its plan, its update and the closed loop's guard."""
    guard = (record.get("guard") or {}).get("seconds") or 0.0
    return float(record.get("seconds_plan", 0.0)) + float(record.get("seconds", 0.0)) + float(guard)


def filtered_fraction(receipt: dict) -> float | None:
    """Fraction of the request's text the redundancy filter dropped (None: no filter ran).  Runs journaled
    before the filter recorded characters give the fraction of chunks instead."""
    f = receipt.get("filter")
    if not f:
        return None
    if f.get("chars"):
        return 1.0 - f["kept_chars"] / f["chars"]
    return 1.0 - f.get("kept_fraction", 1.0)


def request_row(record: dict) -> dict:
    """What a report shows of one request's record (``requests`` of results.json / the journal)."""
    receipt = record.get("receipt") or {}
    layers, imp = receipt.get("layers") or {}, receipt.get("importance") or {}
    return {
        "id": record.get("id"),
        "position": record.get("position"),
        "redundant": bool(record.get("redundant") or receipt.get("fully_redundant")),
        "objective": record.get("objective"),
        "phases": request_phases(record),
        "seconds": request_seconds(record),
        "filtered_fraction": filtered_fraction(receipt),
        "layers": layers.get("layers"),
        "n_layers": len(layers["layer_scores"]) if layers.get("layer_scores") else None,
        "importance": imp.get("importance"),
        "thresholds": imp.get("thresholds"),
        "peak_memory_bytes": record.get("peak_memory_bytes"),
        "steps": record.get("steps"),
        "request_ce_before": record.get("request_ce_before"),
        "request_ce_after": record.get("request_ce_after"),
        # the closed loop: the stop target, the request's loss before and after, why it stopped, how often it measured
        "loop": {
            **{k: loop[k] for k in ("target", "loss_before", "loss_after", "stopped") if k in loop},
            **({"checks": len(loop["measured"]) - 1} if "measured" in loop else {}),
        }
        if (loop := record.get("loop"))
        else None,
        # rows.escalate_steps: the weight update a row edit short of its target went on with
        "escalated": {k: esc["loop"].get(k) for k in ("loss_after", "stopped")} | {"steps": esc.get("steps")}
        if (esc := record.get("escalated")) and esc.get("loop")
        else None,
    }


# ---- one run ---------------------------------------------------------------------------------------------


def journal_results(run: str | Path | RunDir) -> tuple[dict, dict]:
    """(start event, a results.json-like dict) from a run's journal, finished or not: the last ``applied`` /
    ``redundant`` record per stream position (a request applied again after a crash counts once), the
    last evaluation per t, the last checkpoint's model."""
    run = RunDir.of(run)
    from fit_unlearn.engine.journal import Journal

    events = Journal(run.journal, writer=False).events
    start = next((e for e in events if e["event"] == "start"), {})
    requests = {
        e["position"]: {"id": e["id"], "position": e["position"], "event": e["event"], **e.get("record", {})}
        for e in events
        if e["event"] in ("applied", "redundant")
    }
    evals = {e["t"]: {k: v for k, v in e.items() if k != "event"} for e in events if e["event"] == "eval"}
    ck = next((e for e in reversed(events) if e["event"] == "checkpoint"), None)
    view = {
        "config": start.get("config", {}),
        "provenance": start.get("provenance", {}),
        "final_model": None if ck is None else str(CheckpointDir(ck["path"]).model),
        "requests": [requests[p] for p in sorted(requests)],
        "rejected": [e for e in events if e["event"] == "rejected"],
        "evals": [evals[t] for t in sorted(evals)],
        "attacks": None,
    }
    return start, view


def _start_event(run: RunDir) -> dict:
    with open(run.journal, encoding="utf-8") as f:
        first = f.readline()
    try:
        e = json.loads(first)
    except ValueError:
        return {}
    return e if e.get("event") == "start" else {}


#: journal events of one-off work before the first request (FIT's importance calibration and layer profile, the
#: closed loop's non-member level and guard baseline), each with the seconds it took
ONE_OFF_EVENTS = ("calibrated", "loop_calibrated")


def one_off_seconds(run: RunDir) -> float | None:
    """Seconds of the run's one-off work before its first request (:data:`ONE_OFF_EVENTS`); None when the run
    did some but the journal predates timing it (session 8)."""
    total = 0.0
    with open(run.journal, encoding="utf-8") as f:
        for line in f:
            if 'calibrated"' not in line:  # "calibrated" and "loop_calibrated"
                continue
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if e.get("event") in ONE_OFF_EVENTS:
                if e.get("seconds") is None:
                    return None
                total += float(e["seconds"])
    return total


def read_run(path: str | Path | RunDir, method: str | None = None, wall_seconds: float | None = None) -> dict:
    """One run directory as data (module docstring); ``method`` labels it (default: the directory's name)."""
    run = RunDir.of(path)
    if not run.is_run():
        raise ConfigError(
            f"{run.root}: not a run directory (no {run.journal.name}); pass the --out of `fit-unlearn run` or "
            "of `fit-unlearn bench`"
        )
    finished = run.results.exists()
    if finished:
        res = json.loads(run.results.read_text())
        start = _start_event(run)
    else:
        start, res = journal_results(run)
    attacks = dict(res.get("attacks") or {})
    for kind in ("quantize", "relearn"):  # `fit-unlearn attack` writes them beside the run
        f = run.attack_file(kind)
        if kind not in attacks and f.exists():
            try:
                attacks[kind] = json.loads(f.read_text())
            except ValueError as e:
                raise ConfigError(
                    f"{f}: not valid JSON ({e}); run `fit-unlearn attack {kind} --run {run.root}` again or remove it"
                ) from None
    config = res.get("config") or {}
    return {
        "dir": str(run.root),
        "method": method or run.root.name,
        "seed": config.get("seed"),
        "finished": finished,
        "strategy": (config.get("strategy") or {}).get("name"),
        "config": config,
        "config_hash": start.get("config_hash"),
        "provenance": res.get("provenance") or start.get("provenance") or {},
        "final_model": res.get("final_model"),
        "evals": [{k: v for k, v in e.items() if k not in ("event", "items")} for e in res.get("evals", [])],
        "requests": [request_row(r) for r in res.get("requests", [])],
        "rejected": len(res.get("rejected") or []),
        "attacks": attacks or None,
        "wall_seconds": wall_seconds,
        "one_off_seconds": one_off_seconds(run),
    }


# ---- inputs ----------------------------------------------------------------------------------------------


def find_runs(inputs: Iterable[str | Path]) -> tuple[list[dict], list[dict]]:
    """(runs, benches) of the inputs: each a run directory or a bench directory (all its runs that exist; with
    several benches, a method is labelled ``<bench>/<method>``)."""
    inputs = [Path(p) for p in inputs]
    runs, benches = [], []
    for p in inputs:
        p = Path(p)
        bench = BenchDir(p)
        if bench.is_bench():
            from fit_unlearn.bench import read_manifest

            manifest = read_manifest(bench)
            benches.append({"dir": str(p), **manifest})
            # runs of several benches are never seeds of one method: each bench's methods keep its name
            label = f"{p.name}/" if len([q for q in inputs if BenchDir(q).is_bench()]) > 1 else ""
            for r in manifest["runs"]:
                d = RunDir(p / r["dir"])
                if d.is_run():
                    runs.append(read_run(d, label + r["method"], r.get("wall_seconds")))
        elif RunDir(p).is_run():
            runs.append(read_run(p))
        elif not p.exists():
            raise ConfigError(f"{p}: no such directory; pass run directories (`fit-unlearn run --out`) or benches")
        else:
            raise ConfigError(
                f"{p}: neither a run directory (no journal.jsonl) nor a bench directory (no bench.json); pass the "
                "--out of `fit-unlearn run` or of `fit-unlearn bench`"
            )
    if not runs:
        raise ConfigError(f"no run has started in {', '.join(map(str, inputs))}: nothing to report yet")
    seen: Counter = Counter((r["method"], r["seed"]) for r in runs)
    for r in runs:  # two runs that would pass for seeds of one method: each keeps its own label
        if seen[(r["method"], r["seed"])] > 1:
            r["method"] = r["dir"]
    return runs, benches


# ---- aggregation -----------------------------------------------------------------------------------------


def aggregate(values: Iterable[float | None]) -> dict | None:
    """``{mean, std, n, values}`` of the values that are defined (std: sample, None for one value)."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return None
    return {
        "mean": statistics.fmean(vals),
        "std": statistics.stdev(vals) if len(vals) > 1 else None,
        "n": len(vals),
        "values": vals,
    }


def _method_evals(runs: list[dict]) -> list[dict]:
    per_run = [{e["t"]: eval_metrics(e) for e in r["evals"]} for r in runs]
    ts = sorted({t for by_t in per_run for t in by_t})
    names: list[str] = []
    for by_t in per_run:
        for m in by_t.values():
            names += [k for k in m if k not in names]
    return [
        {
            "t": t,
            "T": next((e.get("T") for r in runs for e in r["evals"] if e["t"] == t), None),
            "seeds": sum(t in by_t for by_t in per_run),
            **{k: aggregate(by_t[t].get(k) for by_t in per_run if t in by_t) for k in names},
        }
        for t in ts
    ]


def _ratio_to(runs: list[dict], base: list[dict]) -> dict | None:
    """Per seed: the runs' total seconds over the requests both applied, their one-off work before the stream
    (FIT's calibration) included, / the base method's over the same."""
    ratios = []
    by_seed = {r["seed"]: r for r in base}
    for r in runs:
        b = by_seed.get(r["seed"])
        if b is None:
            continue
        mine = {q["id"]: q["seconds"] for q in r["requests"]}
        theirs = {q["id"]: q["seconds"] for q in b["requests"]}
        common = mine.keys() & theirs.keys()
        if common and sum(theirs[i] for i in common) > 0:
            mine_total = sum(mine[i] for i in common) + (r.get("one_off_seconds") or 0.0)
            theirs_total = sum(theirs[i] for i in common) + (b.get("one_off_seconds") or 0.0)
            ratios.append(mine_total / theirs_total)
    return aggregate(ratios)


def _cost(runs: list[dict], npo: list[dict]) -> dict:
    phases: list[str] = []
    for r in runs:
        for q in r["requests"]:
            phases += [p for p in q["phases"] if p not in phases]

    def mean(xs):
        xs = list(xs)
        return statistics.fmean(xs) if xs else None

    peaks = [q["peak_memory_bytes"] for r in runs for q in r["requests"] if q.get("peak_memory_bytes")]
    return {
        "requests": sum(len(r["requests"]) for r in runs),
        "seconds_per_request": aggregate(mean(q["seconds"] for q in r["requests"]) for r in runs),
        "phases": {p: aggregate(mean(q["phases"].get(p, 0.0) for q in r["requests"]) for r in runs) for p in phases},
        "peak_memory_bytes": max(peaks) if peaks else None,
        "ratio_to_npo": _ratio_to(runs, npo) if npo else None,
        # once per run, before the first request; None where a journal predates timing it
        "one_off_seconds": aggregate(r.get("one_off_seconds") for r in runs),
        # a run killed mid-way never recorded its wall time (or only part of it): finished runs only
        "wall_seconds": aggregate(r.get("wall_seconds") for r in runs if r["finished"]),
    }


def _attacks(runs: list[dict]) -> dict | None:
    quant: dict = {}
    relearn = []
    for r in runs:
        a = r.get("attacks") or {}
        q = a.get("quantize")
        if q:
            unl = q["models"]["unlearned"]
            for prec, rec in q.get("recovery", {}).items():
                quant.setdefault(prec, {"recovery": [], "forget": [], "forget_fp": [], "retain": []})
                quant[prec]["recovery"].append(rec)
                quant[prec]["forget"].append(dig(unl, (prec, "forget_score")))
                quant[prec]["retain"].append(dig(unl, (prec, "retain_score")))
                quant[prec]["forget_fp"].append(dig(unl, ("fp", "forget_score")))
        if a.get("relearn"):
            relearn.append(a["relearn"].get("recovery"))
    if not quant and not relearn:
        return None
    return {
        "quantize": {p: {k: aggregate(v) for k, v in d.items()} for p, d in quant.items()},
        "relearn_recovery": aggregate(relearn),
    }


def _fit_parts(runs: list[dict]) -> dict:
    """Layers selected (counts per layer index), importance thresholds and objectives chosen, over seeds."""
    layers: Counter = Counter()
    n_layers = None
    for r in runs:
        for q in r["requests"]:
            if q["layers"] is not None:
                layers.update(q["layers"])
                n_layers = q["n_layers"] or n_layers
    objectives = Counter(q["objective"] or "none (redundant)" for r in runs for q in r["requests"])
    return {
        "layer_counts": {str(i): layers.get(i, 0) for i in range(n_layers)} if n_layers else None,
        "objectives": dict(sorted(objectives.items())),
        # each run's mean over its requests, then mean +- std over the runs (seeds), as every other column
        "filtered": aggregate(
            statistics.fmean(f)
            if (f := [q["filtered_fraction"] for q in r["requests"] if q["filtered_fraction"] is not None])
            else None
            for r in runs
        ),
        "redundant": sum(q["redundant"] for r in runs for q in r["requests"]),
    }


class Targets(Section):
    """The quality targets a report checks each method against (``fit-unlearn report --targets``); the defaults
    are the closed-loop benchmark's (benchmarks/README.md)."""

    forget_degree: float = Field(default=0.90, ge=0, le=1)
    """Strict F.D. at least this at every checkpoint: each requested deletion has happened."""
    retain_utility: float = Field(default=0.95, ge=0, le=1)
    """R.U. at least this at every checkpoint."""
    mia_auc: float = Field(default=0.60, ge=0, le=1)
    """MIA AUC (forgotten vs holdout documents) at most this at every checkpoint."""
    capital_probe: float = Field(default=0.03, ge=0, le=1)
    """The capital probe's accuracy within this of theta_0's at every checkpoint (general knowledge kept)."""
    quantize_recovery: float = Field(default=0.10, ge=0)
    """The int4 quantization attack recovers at most this fraction of the forget gap."""
    relearn_recovery: float = Field(default=0.30, ge=0)
    """The relearning attack recovers at most this fraction of the forget gap."""
    cost_ratio: float = Field(default=1.0, gt=0)
    """Seconds per request at most this multiple of NPO's on the same requests (a bench with an ``npo`` run)."""


def _values(evals: list[dict], key: str) -> list[tuple[int, float]]:
    """(t, value) of every seed at every checkpoint that measured ``key``."""
    return [(e["t"], v) for e in evals if e.get(key) for v in e[key]["values"]]


def _once(agg: dict | None) -> list[tuple[None, float]]:
    """The per-seed values of a figure measured once per run (no checkpoint)."""
    return [(None, v) for v in (agg or {}).get("values", [])]


def _check(
    name: str,
    measured: list[tuple[int | None, float]],
    *,
    at_least: float | None = None,
    at_most: float | None = None,
    rule: str | None = None,
) -> dict:
    """One target: every measured value at least ``at_least`` (the worst is the lowest) or at most ``at_most``
    (the highest), within float rounding."""
    low = at_least is not None
    bound = at_least if low else at_most
    rule = rule or f"{'>=' if low else '<='} {bound:g}"
    if not measured:
        return {"target": name, "rule": rule, "met": None, "worst": None, "at": None}
    t, v = (min if low else max)(measured, key=lambda tv: tv[1])
    met = all((x >= bound - 1e-12) if low else (x <= bound + 1e-12) for _, x in measured)
    return {"target": name, "rule": rule, "met": met, "worst": v, "at": t}


#: an attack's recovery is the share of the forget gap (theta_0's F - the model's F) that comes back; below this many
#: points of gap, quantization noise alone (theta_0 itself loses points in int4) makes the ratio meaningless
RECOVERY_MIN_GAP = 10.0


def _gap_too_small(evals: list[dict], q4: dict, rule: str) -> dict | None:
    """The int4 check where the unlearned model forgot too little for a recovery to mean anything (n/a, with why)."""
    theta0 = dig(evals[-1] if evals else {}, ("F_forgotten_theta0", "mean"))
    fp = dig(q4, ("forget_fp", "mean"))
    if theta0 is None or fp is None or theta0 - fp >= RECOVERY_MIN_GAP:
        return None
    return {"target": "int4 recovery", "rule": rule, "met": None, "worst": None, "at": None, "gap": theta0 - fp}


def check_targets(method: dict, targets: Targets) -> list[dict]:
    """Whether ``method`` (one entry of :func:`summarise`'s ``methods``) meets each of ``targets``: per target the
    rule, ``met`` (True / False; None where nothing measured it), the worst value measured and its checkpoint."""
    ev, tg = method["evals"], targets
    capital = [(t, abs(v)) for t, v in _values(ev, "capital_probe_delta")]
    attacks = method.get("attacks") or {}
    q4 = dig(attacks, ("quantize", "int4")) or {}
    int4 = q4.get("recovery")
    relearn = attacks.get("relearn_recovery")
    ratio = method["cost"].get("ratio_to_npo")
    return [
        _check("strict F.D.", _values(ev, "forget_degree_strict"), at_least=tg.forget_degree),
        _check("R.U.", _values(ev, "retain_utility"), at_least=tg.retain_utility),
        _check("MIA AUC", _values(ev, "mia_auc_forget_vs_holdout"), at_most=tg.mia_auc),
        _check("capital probe vs theta_0", capital, at_most=tg.capital_probe, rule=f"within {tg.capital_probe:g}"),
        _gap_too_small(ev, q4, f"<= {tg.quantize_recovery:g}")
        or _check("int4 recovery", _once(int4), at_most=tg.quantize_recovery),
        _check("relearn recovery", _once(relearn), at_most=tg.relearn_recovery),
        _check("cost vs NPO", _once(ratio), at_most=tg.cost_ratio, rule=f"<= {tg.cost_ratio:g}x"),
    ]


def summarise(inputs: Sequence[str | Path], targets: Targets | None = None) -> dict:
    """Everything a report renders, from run and bench directories: the runs as read (:func:`read_run`) and,
    per method, the evaluations over seeds, the cost, FIT's parts, the attacks and the targets (``targets``, the
    defaults when None) each meets (module docstring)."""
    from fit_unlearn.provenance import provenance

    targets = targets if targets is not None else Targets()
    runs, benches = find_runs(inputs)
    order: list[str] = []
    for r in runs:
        if r["method"] not in order:
            order.append(r["method"])
    methods = {}
    for m in order:
        mine = sorted((r for r in runs if r["method"] == m), key=lambda r: (r["seed"] is None, r["seed"]))
        npo_name = m.rpartition("/")[0] + "/npo" if "/" in m else "npo"  # NPO of the same bench
        npo = [r for r in runs if r["method"] == npo_name]
        methods[m] = {
            "seeds": [r["seed"] for r in mine],
            "runs": [r["dir"] for r in mine],
            "finished": all(r["finished"] for r in mine),
            "evals": _method_evals(mine),
            "cost": _cost(mine, npo if m != npo_name else []),
            **_fit_parts(mine),
            "attacks": _attacks(mine),
        }
        methods[m]["targets"] = check_targets(methods[m], targets)
    return {
        "inputs": [str(p) for p in inputs],
        "targets": targets.model_dump(),
        "benches": benches,
        "runs": runs,
        "methods": methods,
        "rendered": provenance(),
    }


__all__ = [
    "EVAL_METRICS",
    "RECOVERY_MIN_GAP",
    "Targets",
    "check_targets",
    "aggregate",
    "eval_metrics",
    "filtered_fraction",
    "find_runs",
    "journal_results",
    "read_run",
    "request_phases",
    "request_row",
    "request_seconds",
    "summarise",
]
