"""Token-keyed edits (``update.trainable: rows``, docs/rows.md): which tokens belong to one request alone, and
the untying of a shared output layer, so that editing those tokens' input-embedding rows changes nothing for a
sequence without them.  The update itself is :func:`fit_unlearn.engine.update.apply_update`'s."""

from __future__ import annotations

from collections.abc import Collection
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator

from fit_unlearn.data.documents import Document
from fit_unlearn.data.qa import derive_qa
from fit_unlearn.errors import ConfigError
from fit_unlearn.layers import unwrap
from fit_unlearn.schema import Section
from fit_unlearn.text import encode_qa, encode_text

#: how a token that begins a word begins: byte-level BPE's space, SentencePiece's word marker, a plain space
WORD_STARTS = ("\u0120", "\u2581", " ")


class RowsSection(Section):
    """Token-keyed edits (``update.trainable: rows``): only the input-embedding rows of the tokens that belong to
    the request alone move."""

    max_df: int = Field(default=0, ge=0)
    """A token is the request's own when at most this many *other* documents of the corpus the engine holds
    (retain-train, holdout and the forget set; never retain-eval, which measures utility) contain it."""
    min_rows: int = Field(default=1, ge=1)
    """Fewer own tokens than this: ``fallback`` decides."""
    general_rank: int = Field(default=0, ge=0)
    """Never edit the tokenizer's first ``general_rank`` tokens (by id).  Byte-level BPE vocabularies (GPT-2, Llama 3,
    SmolLM2) number their tokens in merge order, so the lowest ids are single characters and the pieces most
    frequent in general text (``j``, ``is``, `` if``, `` first``): a request may be the only document of the index
    that holds one, yet any text outside it reads it.  0: every token may be edited.  Measured with 2000 over 60
    synthetic requests (benchmarks/README.md, "Session 12"): it moves the retain loss onto the documents holding an
    edited surname (fewer rows per request, each pushed further) rather than removing it; hence off."""
    general_zipf: float = Field(default=0.0, ge=0, le=8)
    """Never edit a token that general text reads often: one without a letter or digit (punctuation, spaces), or
    whose text is a word at least this frequent in ``general_lang`` on the Zipf scale of the ``wordfreq`` package
    (log10 of uses per billion words, from Wikipedia, subtitles, news, books and web text: ``the`` 7.7, ``married``
    5.0, ``Lisa`` 4.3, ``peach`` 3.8, ``Kellynch`` 0).  The index counts only the documents the engine holds, so in
    prose two thirds of a passage's "own" tokens are common words (`` four``, `` rooms``, ``which``); any text
    outside the index reads them.  Digits count as general too (wordfreq rates them as frequent words), so ages and
    years stay out of the edit.  A request whose every token is general has no row to edit and gets a weight update,
    as ``fallback: full`` gives.  0: off.  Measured with 4 (benchmarks/README.md, "Session 19"): it leaves a half
    (PCH-kind sets) to a third (prose) of the rows a request edits.  It forgot less on every set (strict F.D. on
    real PCH 60 0.22-0.33 against 0.78-0.84; forgotten Austen passages at F 61-66 against 40-50), and it did not
    keep the retain score on synthetic 120 (88.2 against 91.8 at t = 120: the documents that lost most read words
    just under the threshold and the rarest tokens of requests left without own ones), at 1.7-1.9x the time.  On
    prose (Austen passages) it kept utility at theta_0's level and membership at chance (MIA AUC 0.37-0.49 against
    0.00); hence an option, off."""
    general_lang: str = "en"
    """The language of ``general_zipf``'s word frequencies (a ``wordfreq`` language code)."""

    @field_validator("general_lang")
    @classmethod
    def _known_language(cls, v: str) -> str:
        from wordfreq import available_languages, zipf_frequency

        if v not in available_languages():
            raise ValueError(
                f"wordfreq has no word frequencies for {v!r}; use one of {', '.join(sorted(available_languages()))}"
            )
        try:
            zipf_frequency("a", v)
        except ModuleNotFoundError as e:  # Japanese, Korean and Chinese words are split by packages of their own
            raise ValueError(
                f"wordfreq needs the package {e.name!r} to read {v!r} words; pip install 'wordfreq[cjk]'"
            ) from None
        return v

    fallback: Literal["rarest", "full"] = "rarest"
    """A request with fewer than ``min_rows`` own tokens: ``rarest`` edits its rarest tokens instead (those that
    the fewest other documents contain, the count raised until there are ``min_rows``; the receipt records the
    count, ``rows.shared_with``: those documents are touched too); ``full``: the request is updated like
    ``trainable: full`` (the strategy's weights and objective, at ``loop.lr``), which moves every document."""
    match: Literal["token", "word"] = "token"
    """What makes two documents share a token.  ``token``: the same token id.  ``word``: the same word, in any of its
    token forms (with or without a leading space, in any case: `` Mar``, ``Mar`` and `` mar`` are one word), so a
    request does not edit ``Mar`` when another document reads `` Mar``.  It leaves 442 of 505 own rows in the edit on
    the synthetic 60-request stream, 626 of 725 on synthetic 120 and 1086 of 1295 on real PCH 60 (fragments such as
    ``j``, ``is``, ``p`` and name pieces that another document holds in another form; benchmarks/README.md, "Session
    17").  With ``word``, ``rows.shared_with`` counts every document that holds a form of the word, including those
    that hold only another form, which the edit does not touch.  Off: it forgot less on real PCH 60 (strict F.D.
    0.44-0.57 against 0.78-0.84) and at t = 60 of synthetic 60 (0.09 against 0.28), though it spared the pending
    documents."""
    reuse_forgotten: bool = False
    """A document whose deletion has been applied no longer counts as another holder of a token: a later request may
    edit the rows it shares only with forgotten documents (and the forgotten documents read the edit, which moves
    nothing anyone keeps).  The stream widens each request's own tokens as it goes (505 rows become 529 over the
    60-request synthetic stream with ``reuse_zipf`` 4).  On in FIT's defaults since session 25 (off for a baseline's
    row edits): over three stream orders of synthetic 60 it took strict F.D. from 0.781 / 0.548 / 0.564 to 0.822 /
    0.916 / 0.862 (means at t = 20 / 40 / 60) at the same R.U., and on real PCH 60 it kept R.U. >= 0.95 where the old
    default fell to 0.947-0.948 at t = 40 (docs/rows.md, benchmarks/README.md, "Session 24" and "Session 25")."""
    cover_prompts: bool = False
    """Also edit, for each of the request's QA pairs whose question holds none of its own tokens, the question's
    rarest word (:func:`prompt_keys`), when at most ``cover_max_df`` other documents hold it (the forgotten ones not
    counted under ``reuse_forgotten``).  An input-row edit changes only what follows an edited token: a question
    made of words other documents share too (a name of common first and last names, "The Taylor Scheme") is read
    exactly as before, and its answer recalled.  The receipt's ``rows.covered`` names each such word and its holders;
    those documents read the edit too.  On in FIT's defaults since session 28: over three stream orders of synthetic
    60 it took strict F.D. from 0.822 / 0.915 / 0.862 to 0.849 / 0.903 / 0.976 (means at t = 20 / 40 / 60; on the
    paraphrased questions 0.346 / 0.646 / 0.356 to 0.423 / 0.884 / 0.567) at R.U. 0.980 / 0.970 / 0.961 (0.986 / 0.982
    / 0.964); on synthetic 120 (order 0) from 0.339-0.860 to 0.830-0.993 at the same R.U.; on real PCH 60, where it
    covers 2 questions of 140, it over-forgets a little more at t = 60 (benchmarks/README.md, "Session 28")."""
    cover_max_df: int = Field(default=2, ge=0)
    """With ``cover_prompts``: the most other documents that may hold a word it edits."""
    cover_min: int = Field(default=1, ge=1)
    """With ``cover_prompts``: the fewest of the request's edited tokens a question should hold; a question with fewer
    gets its rarest other words edited, up to this many (rarest first, stopping at the first word more than
    ``cover_max_df`` other documents hold).  1: only a question that holds none.  On book passages, whose questions
    are read in common words, the questions holding one edited word kept their answers on the whole (answer
    probability 0.51 against the retain-only model's 0.005) where those holding two or more lost them (0.004 against
    0.003); off: on synthetic 60, 2 cost R.U. (0.904 against 0.942 at t = 60) (benchmarks/README.md, "Session 30")."""
    reuse_zipf: float = Field(default=4.0, ge=0, le=8)
    """With ``reuse_forgotten``: a token general text reads often (as ``general_zipf`` tells them: no letter or digit,
    or a word of at least this Zipf frequency), and any piece that does not begin a word (``ing``, ``ville``), stays
    counted for the forgotten documents that hold it: freed, `` water``, `` should`` or a code indent (``\\n ``) are
    read by documents outside the index, which lose what they read (benchmarks/README.md, "Session 24").  0: every
    token a forgotten document holds is freed."""
    reuse_max_df: int = Field(default=1, ge=1)
    """With ``reuse_forgotten``: a token is freed only while at most this many forgotten documents hold it.  A word that
    many deleted documents share is a phrase of their kind (`` fatigue`` and `` cures`` in the synthetic health
    rumours), which documents of the same kind outside the index read too (benchmarks/README.md, "Session 24")."""
    escalate_steps: int = Field(default=0, ge=0)
    """Under the closed loop: a row edit that ends short of its target (budget spent, or stalled) goes on as a weight
    update of the request (the strategy's weights and objective at ``loop.lr``, as ``fallback: full``; FIT: T's layers
    and I's objective) under the same stop rule, for at most this many steps; the guard may then repair.  Row edits
    cannot reach the tokens before a request's first own token, nor those its context gives away.  0: off.  With 10 on
    synthetic 60 no escalated request reached its target, R.U. fell to 0.922 at t = 60 and FIT took 2.5x NPO's time
    (benchmarks/README.md, "Session 24")."""
    side: Literal["input", "both"] = "input"
    """Which rows of the request's own tokens move.  ``input``: the input-embedding rows only, so the edit changes how
    the model *reads* those tokens and never what it predicts; it cannot reach a token's first occurrence in the
    request (its prediction comes from the text before it), which is where the requests that spend their step
    budget keep their facts (benchmarks/README.md, "Session 24").  ``both``: the output-layer rows of the same tokens
    are also shrunk toward 0 (:class:`EditedOutputRows`; the output layer untied first), so the edit can lower the
    probability of predicting them too; every sequence's logits for those tokens move (a sequence without them reads
    the same hidden states; only those tokens' logits, hence its softmax, change), so the guard re-scores its whole
    probe after such a request.  Off: on the first 20 synthetic requests (FIT's defaults otherwise) it brought the
    budget-spending requests' loss closer to the target, but the others reached it in fewer input-row steps and
    forgot less by the evaluation's measure: strict F.D. 0.837 against 0.993 at t = 20 at the same R.U.
    (benchmarks/README.md, "Session 27")."""
    step: Literal["adam", "normalized"] = "adam"
    """How a row edit steps.  ``adam``: AdamW at ``rows.lr``, which moves every coordinate of every edited row by about
    the learning rate, whether or not the coordinate matters to the request's loss.  ``normalized``: plain gradient
    descent on the gradient of all the request's rows scaled to unit norm, so each step moves the rows by ``rows.lr``
    in all (L2) along the direction that raises the request's loss fastest, and coordinates the loss does not read
    stay put.  Off: on the first 20 requests of real PCH 60 (order 2), at 0.2 with ``loop.max_steps: 60`` and the plain
    mean as the stop's measure, it kept the retain score where FIT's defaults lose it (R.U. 0.969 against 0.914) but
    forgot the QA answers past the retain-only model's level and the text less (strict F.D. 0.612 against 0.820) at 2.0x
    the time; on synthetic 60 it forgot less (0.585 against 0.977 at t = 20) (benchmarks/README.md, "Session 31")."""
    lr: float = Field(default=2e-2, gt=0)
    """Learning rate of row edits (open and closed loop; ``loop.lr`` is for weight updates).  On the default model,
    2e-2 with ``loop.check_every: 2`` (as ``examples/rows.yaml`` and the bench's ``-rows``) kept the retain score of
    1e-2 over 60 synthetic and 20 real PCH requests, forgets further and takes 12 steps instead of 17.6 (1.5x NPO's
    time instead of 2.5x then; since session 16, which trains the rows alone, 0.99x NPO in the same run over the 60
    synthetic requests: benchmarks/README.md, "Session 10", "Session 16").  3e-2 (with ``loop.check_every: 2``)
    takes half the steps and about NPO's time per request, but after 60 requests the retain-eval score is 92.6 (98.0
    at 1e-2): four documents outside the index that read an edited token lost 1-28 points each
    (benchmarks/README.md, "Session 10")."""


def token_documents(tok, docs: list[Document], match: Literal["token", "word"] = "token") -> dict[int, frozenset[str]]:
    """Token id -> ids of the documents that contain it: the index of :func:`own_tokens`.  A document holds the
    tokens of its text, of its training QA pairs and of the QA pairs the engine derives for it (:func:`derive_qa`:
    "How old is ...?", "In which programming language is ... written?"; a continuation pair for a document without
    known fields), because a request that comes without QA pairs is trained on exactly those.  Otherwise a corpus
    stored with one question form leaves the other forms' words ("How", "old", "language") to the first request the
    engine asks in them, and editing them breaks that question for every document (benchmarks/README.md, "Session
    17").  A form is shared only when more than ``rows.max_df`` other documents derive it (documents of the same
    kind with the same field).  ``match``: :attr:`RowsSection.match`."""
    index: dict[int, set[str]] = {}
    for d in docs:
        for t in document_tokens(tok, d.text, dict.fromkeys((*d.qa, *derive_qa(d.text, d.id, warn=False)))):
            index.setdefault(t, set()).add(d.id)
    if match == "word":
        return _by_word(tok, index)
    if match != "token":
        raise ValueError(f"rows.match must be 'token' or 'word', got {match!r}")
    return {t: frozenset(ids) for t, ids in index.items()}


def _by_word(tok, index: dict[int, set[str]]) -> dict[int, frozenset[str]]:
    """``rows.match: word``: each token, in the corpus or not, is held by the documents that hold any token form of
    its word.  A token whose text is only whitespace, or an incomplete UTF-8 byte sequence (a piece of a character
    that byte-level vocabularies split), spells no word and keeps its own documents."""
    ids = sorted(set(range(len(tok))) | set(index))
    decoded = zip(ids, tok.batch_decode([[t] for t in ids]), strict=True)
    words = {t: w.strip().lower() for t, w in decoded if w.strip() and "\ufffd" not in w}
    forms: dict[str, set[str]] = {}
    for t, held in index.items():
        forms.setdefault(words.get(t, t), set()).update(held)  # a token that spells no word: a form of its own
    return {t: frozenset(forms[key]) for t in ids if (key := words.get(t, t)) in forms}


def document_tokens(tok, text: str | None, qa) -> set[int]:
    """The token ids a document's sequences hold: its text, and each QA pair as it is trained and scored."""
    ids = set(encode_text(tok, text or "", max_len=None, eos=False))
    for q in qa:
        ids |= set(encode_qa(tok, q, max_len=1 << 30)[0])
    return ids


def own_tokens(
    tok,
    doc_id: str,
    text: str | None,
    qa,
    index: dict[int, frozenset[str]],
    max_df: int,
    min_rows: int = 0,
    general: Collection[int] = frozenset(),
    forgotten: Collection[str] = frozenset(),
    counted: Collection[int] = frozenset(),
    reuse_max: int | None = None,
) -> tuple[list[int], int]:
    """The token ids of a request (``text`` and ``qa``) that at most ``max_df`` documents of ``index`` other than
    ``doc_id`` contain: the keys by which the model recalls this document and (almost) no other.  With
    ``min_rows``, the count is raised until that many tokens qualify (the rarest ones).  Ids in ``general``
    (:func:`general_tokens`: those general text reads often) never qualify.  Ids in ``forgotten`` (documents already
    deleted, ``RowsSection.reuse_forgotten``) do not count as other holders, except for the ids in ``counted``
    (``RowsSection.reuse_zipf``: those general text reads often) and the tokens more than ``reuse_max`` forgotten
    documents hold (``RowsSection.reuse_max_df``).  Returns (tokens, the count used)."""
    holders = holder_count(doc_id, index, forgotten, counted, reuse_max)
    others = {t: holders(t) for t in document_tokens(tok, text, qa) if t not in general}
    df = max_df
    for count in sorted(set(others.values())):
        if count > max_df and sum(c <= df for c in others.values()) >= min_rows:
            break
        df = max(df, count)
    return sorted(t for t, c in others.items() if c <= df), df


def holder_count(
    doc_id: str,
    index: dict[int, frozenset[str]],
    forgotten: Collection[str] = frozenset(),
    counted: Collection[int] = frozenset(),
    reuse_max: int | None = None,
):
    """Token id -> how many documents of ``index`` other than ``doc_id`` hold it, as :func:`own_tokens` counts them
    (``forgotten``, ``counted`` and ``reuse_max`` as there)."""
    gone = frozenset(forgotten)

    def holders(t: int) -> int:
        held = index.get(t, frozenset()) - {doc_id}
        freed = held & gone if t not in counted else frozenset()
        return len(held) - (len(freed) if reuse_max is None or len(freed) <= reuse_max else 0)

    return holders


def prompt_keys(
    tok, qa, rows: Collection[int], holders, general: Collection[int], max_df: int, least: int = 1
) -> list[dict]:
    """``rows.cover_prompts``: for each QA pair whose question holds fewer than ``least`` of ``rows`` (``cover_min``;
    1: none), the question's rarest words, up to that many (a word: a token that begins a word, has a letter, is not
    in ``general``; the rarest has the fewest other holders by ``holders``, :func:`holder_count`; ties: the less
    frequent word in general text by ``wordfreq``, then the lower id), stopping at the first word more than
    ``max_df`` other documents hold.  A row edit changes only what follows an edited token, so a question made of
    words other documents share too ("What is the address of Stephanie U. Miller?") is read exactly as before and its
    answer recalled as before.  Returns one entry per edited word: the question, the token, its text and its
    holders."""
    from wordfreq import zipf_frequency

    have, general = set(rows), frozenset(general)
    out = []
    for q in qa:
        ids, n_prompt = encode_qa(tok, q, max_len=1 << 30)
        prompt = set(ids[:n_prompt])
        need = least - len(prompt & have)
        if need <= 0:
            continue
        ids = sorted(prompt - general - have)
        words = {
            t: text
            for t, piece, text in zip(
                ids, tok.convert_ids_to_tokens(ids), tok.batch_decode([[t] for t in ids]), strict=True
            )
            if str(piece).startswith(WORD_STARTS) and any(c.isalpha() for c in text)
        }
        for n, _, t in sorted((holders(t), zipf_frequency(text.strip(), "en"), t) for t, text in words.items())[:need]:
            if n > max_df:
                break
            have.add(t)
            out.append({"question": q.question, "token": t, "decoded": words[t], "holders": n})
    return out


def reuse_counted_tokens(tok, zipf: float, lang: str = "en") -> frozenset[int]:
    """The ids that forgotten documents keep holding under ``rows.reuse_forgotten``: :func:`general_tokens` at ``zipf``,
    and every token that does not begin a word (no leading space or word marker: ``ing``, ``ville``, ``ist``), which
    any word of general text may end in."""
    inner = {
        i
        for i, piece in enumerate(tok.convert_ids_to_tokens(list(range(len(tok)))))
        if not str(piece).startswith(WORD_STARTS)
    }
    return general_tokens(tok, zipf, lang) | frozenset(inner)


def general_tokens(tok, zipf: float, lang: str = "en", rank: int = 0) -> frozenset[int]:
    """The ids of ``tok`` that general text reads often, never edited: the first ``rank`` ids
    (``RowsSection.general_rank``) and, with ``zipf`` above 0 (``RowsSection.general_zipf``), those whose text has
    no letter or digit or is a word of Zipf frequency ``zipf`` or more in ``lang`` by ``wordfreq``."""
    out = set(range(rank))
    if zipf <= 0:
        return frozenset(out)
    from wordfreq import zipf_frequency

    for i in range(len(tok)):
        word = tok.decode([i]).strip().lower()
        if not any(c.isalnum() for c in word) or zipf_frequency(word, lang) >= zipf:
            out.add(i)
    return frozenset(out)


def untie_embeddings(model) -> bool:
    """Give a model whose output layer shares the input-embedding matrix its own copy (theta_0's values), so
    that editing an input row does not change what the model predicts; returns whether it was tied."""
    base = unwrap(model)
    inp, out = base.get_input_embeddings(), base.get_output_embeddings()
    if out is None or out.weight is not inp.weight:
        return False
    out.weight = torch.nn.Parameter(inp.weight.detach().clone(), requires_grad=inp.weight.requires_grad)
    base.config.tie_word_embeddings = False
    if getattr(base.config, "get_text_config", None) is not None:
        base.config.get_text_config().tie_word_embeddings = False
    return True


class EditedOutputRows:
    """The output-layer rows one request edits (``rows.side: both``), each only *shrunk*: row ``t`` becomes ``s_t``
    times theta_0's, ``0 <= s_t <= 1`` trained, so a token's logit moves toward 0 in every context and can never
    rise where it was positive.  A free row would not do: ascent raises every token's logit where it is not the
    target, and 20 synthetic requests edited so left retain-eval predicting the requests' own tokens (R.U. 0.707,
    benchmarks/README.md, "Session 27").  The logits of the request's tokens are read through a forward hook on the
    (untied) output layer; :meth:`close` writes the shrunk rows back (the saved model computes the same logits)."""

    def __init__(self, head: torch.nn.Linear, rows: list[int]):
        w = head.weight
        self.head = head
        self.index = torch.tensor(sorted(rows), dtype=torch.long, device=w.device)
        self.param = torch.nn.Parameter(torch.ones(1, len(rows), dtype=torch.float32, device=w.device))
        self._hook = None

    @staticmethod
    def require(head) -> None:
        """Refuse an output layer the hook cannot read: anything but a plain ``torch.nn.Linear`` without bias."""
        if not (type(head) is torch.nn.Linear and head.bias is None and type(head.weight.data) is torch.Tensor):
            raise ConfigError(
                f"update.rows.side both needs a plain output layer without bias, got {type(head).__name__}; "
                "use rows.side input"
            )

    def attach(self) -> None:
        self._hook = self.head.register_forward_hook(self._logits)

    def _logits(self, module, args, out):
        return out.index_copy(-1, self.index, out.index_select(-1, self.index) * self.param.to(out.dtype))

    @torch.no_grad()
    def project(self) -> None:
        """Keep every scale in [0, 1] (after each optimiser step)."""
        self.param.clamp_(0.0, 1.0)

    @torch.no_grad()
    def close(self) -> None:
        """Remove the hook and write the shrunk rows into the output matrix."""
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
            w = self.head.weight
            w[self.index] = (w[self.index].float() * self.param.detach().T).to(w.dtype)


class EditedRows:
    """The rows one request edits, trained as a tensor of their own: a forward hook on the input embedding reads
    them in place of the matrix's rows, and :meth:`close` writes them back.  The result is the masked update of the
    whole matrix (the other rows' gradients are zero, so AdamW leaves them as they are; bit-identical on CPU in
    fp32, tested), without an optimiser step, a dense gradient and a mask over every row of the vocabulary at each
    step: on the default model the matrix has 28 M weights and a request edits a handful of rows (6-8 on average on
    the synthetic sets, 22 on real PCH).  Only for a plain ``torch.nn.Embedding`` (:meth:`supports`)."""

    def __init__(self, embedding: torch.nn.Embedding, rows: list[int]):
        w = embedding.weight
        self.embedding = embedding
        self.index = torch.tensor(sorted(rows), dtype=torch.long, device=w.device)
        self.param = torch.nn.Parameter(w.detach()[self.index].clone())
        #: token id -> 1 + its place in :attr:`param`; 0 for a row that is not edited (the zero row of the lookup)
        self.slot = torch.zeros(w.shape[0], dtype=torch.long, device=w.device)
        self.slot[self.index] = torch.arange(1, len(self.index) + 1, device=w.device)
        self._hook = None

    @staticmethod
    def supports(embedding, rows: list[int]) -> bool:
        """A plain embedding lookup of a plain tensor, whose output at a token is exactly the token's row and whose
        backward treats the edited rows as any other (no scale, ``max_norm``, per-frequency scaling, sparse
        gradient, or an edited padding row)."""
        return (
            type(embedding) is torch.nn.Embedding
            and embedding.max_norm is None
            and not embedding.scale_grad_by_freq
            and not embedding.sparse
            and (embedding.padding_idx is None or embedding.padding_idx not in rows)
            and type(embedding.weight.data) is torch.Tensor
        )

    def attach(self) -> None:
        """From now on the model reads the rows from :attr:`param`."""
        self._hook = self.embedding.register_forward_hook(self._read, with_kwargs=True)

    def _read(self, module, args, kwargs, out):
        slot = self.slot[args[0] if args else kwargs["input"]]
        table = torch.cat([self.param.new_zeros(1, self.param.shape[1]), self.param])
        # the embedding's own lookup and backward (a zero gradient for the padding row 0: the rows not edited)
        return torch.where((slot > 0).unsqueeze(-1), F.embedding(slot, table, padding_idx=0), out)

    @torch.no_grad()
    def close(self) -> None:
        """Remove the hook and write the trained rows into the embedding matrix."""
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
            self.embedding.weight[self.index] = self.param.detach().to(self.embedding.weight.dtype)
