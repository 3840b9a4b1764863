"""Request streams: a seeded permutation of the forget documents (document and QA move together)."""

from __future__ import annotations

import random
from collections.abc import Sequence

from fit_unlearn.data.documents import Document


def stream_order(docs: Sequence[Document], seed: int | None) -> list[Document]:
    """The forget documents in stream order: file order for ``seed=None``, else a seeded permutation.
    Each Document carries its own QA pairs, so documents and QA can never be shuffled apart."""
    docs = list(docs)
    if seed is None:
        return docs
    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    return [docs[i] for i in order]
