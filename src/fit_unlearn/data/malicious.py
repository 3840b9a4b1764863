"""Adversarial ("malicious unlearning") request streams, for testing collapse.

* ``near_duplicate``: a few source documents, each requested many times with one or two words changed;
* ``overlap``: heavily overlapping windows (stride = 1/5 of the window) over the source documents;
* ``common_tokens``: requests made only of very common English words (unlearning them harms everything);
* ``mixed``: the three interleaved.
Requests get fresh ids (``mal-NNNN``), so the engine cannot refuse them as duplicates: only content-aware
defences such as FIT's redundancy filter can.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from fit_unlearn.data.documents import Document
from fit_unlearn.errors import DataError

KINDS = ("near_duplicate", "overlap", "common_tokens", "mixed")
COMMON = (
    "the of and to a in is it you that he was for on are with as I his they be at one have this from or "
    "had by not word but what some we can out other were all there when up use your how said an each she "
    "which do their time if will way about many then them write would like so these her long make thing "
    "see him two has look more day could go come did number sound no most people my over know water than "
    "call first who may down side been now find"
).split()


def _near_duplicates(src: Sequence[Document], n: int, rng: random.Random) -> list[str]:
    bases = rng.sample(list(src), max(1, min(len(src), n // 10)))
    out = []
    for i in range(n):
        words = bases[i % len(bases)].text.split(" ")
        for _ in range(rng.randint(1, 2)):
            j = rng.randrange(len(words))
            words[j] = rng.choice(words)
        out.append(" ".join(words))
    return out


def _overlaps(src: Sequence[Document], n: int, rng: random.Random, window: int = 240) -> list[str]:
    text = " ".join(d.text for d in rng.sample(list(src), min(len(src), 3)))
    stride = max(1, window // 5)
    starts = list(range(0, max(1, len(text) - window), stride)) or [0]
    return [text[starts[i % len(starts)] : starts[i % len(starts)] + window] for i in range(n)]


def _common(n: int, rng: random.Random, words: int = 40) -> list[str]:
    return [" ".join(rng.choice(COMMON) for _ in range(words)).capitalize() + "." for _ in range(n)]


def malicious_requests(src: Sequence[Document], kind: str, n: int, seed: int = 0) -> list[Document]:
    if kind not in KINDS:
        raise DataError(f"unknown malicious stream kind {kind!r}; choose one of {', '.join(KINDS)}")
    if n <= 0:
        raise DataError(f"--n must be positive, got {n}")
    if not src and kind != "common_tokens":
        raise DataError("malicious streams of this kind need source documents (the forget split)")
    rng = random.Random(seed)
    if kind == "mixed":
        parts = [_near_duplicates(src, n, rng), _overlaps(src, n, rng), _common(n, rng)]
        texts = [parts[i % 3][i // 3] for i in range(n)]
    elif kind == "near_duplicate":
        texts = _near_duplicates(src, n, rng)
    elif kind == "overlap":
        texts = _overlaps(src, n, rng)
    else:
        texts = _common(n, rng)
    return [Document(id=f"mal-{i:04d}", text=t, domain="malicious") for i, t in enumerate(texts)]
