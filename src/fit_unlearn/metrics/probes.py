"""General-knowledge probe: real facts from the MIT-licensed ``countryinfo`` package.

Used to check that preparing theta_0 (memorising the forget data) does not wipe out what the base
model already knew, and later that unlearning does not either.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from fit_unlearn.metrics.scores import generate_answers


@dataclass(frozen=True)
class Probe:
    prompt: str
    answer: str


def capital_probes(n: int = 40, seed: int = 0) -> list[Probe]:
    import countryinfo

    items = []
    for c in countryinfo.all_countries():
        try:
            name, cap = c.name(), c.capital()
        except Exception:  # noqa: BLE001 - a few entries lack fields
            continue
        if isinstance(cap, str) and cap.strip() and isinstance(name, str) and name.strip():
            items.append(Probe(f"The capital of {name.strip()} is", cap.strip()))
    items.sort(key=lambda p: p.prompt)
    random.Random(seed).shuffle(items)
    return items[:n]


def replay_facts(n: int = 80, probe_n: int = 40, seed: int = 0) -> list[str]:
    """General-knowledge rehearsal sentences for preparation, from countries NOT in the probe set.

    Fine-tuning a 135M model to memorise fictional people, cities and companies drifts its prior (asked
    for a capital it answers with an invented town).  Rehearsing a few real facts about *other* countries
    anchors it; the probe countries are never trained on, so the probe still measures retained knowledge."""
    import countryinfo

    probe_countries = {p.prompt for p in capital_probes(probe_n, seed)}
    facts = []
    for c in countryinfo.all_countries():
        try:
            name, cap, region = c.name(), c.capital(), c.region()
        except Exception:  # noqa: BLE001
            continue
        if not (isinstance(name, str) and isinstance(cap, str) and cap.strip()):
            continue
        if f"The capital of {name.strip()} is" in probe_countries:
            continue
        facts.append(f"The capital of {name.strip()} is {cap.strip()}.")
        if isinstance(region, str) and region.strip():
            facts.append(f"{name.strip()} is a country in {region.strip()}.")
    random.Random(seed + 1).shuffle(facts)
    return facts[:n]


def probe_accuracy(model, tok, probes: list[Probe], max_new_tokens: int = 8) -> dict:
    gens = generate_answers(model, tok, [p.prompt for p in probes], max_new_tokens=max_new_tokens)
    hits = [p.answer.lower() in g.lower() for p, g in zip(probes, gens, strict=True)]
    return {
        "accuracy": sum(hits) / len(hits) if hits else 0.0,
        "n": len(hits),
        "items": [
            {"prompt": p.prompt, "answer": p.answer, "generated": g, "correct": h}
            for p, g, h in zip(probes, gens, hits, strict=True)
        ],
    }
