"""Deterministic QA derivation from PCH-style documents.

The PCH authors' QA set is not public, so every document gets QA pairs derived from its
``Field: value`` blocks.  Answers are verbatim spans of the document.  Domains:

* ``personal``  Name / Age / Address / Occupation / Description
* ``code``      Language / Code / Explanation
* ``paper``     Title / Abstract / Introduction / Body / Conclusion
* ``harmful``   Title / Category / Description / AdditionalContext

A document whose fields cannot be parsed gets a continuation pair (first half of its first sentence
-> second half) and a warning, never an error.

Each derived pair also has a *paraphrase*: the same fact asked in other words (``Where does X live?`` for
``What is the address of X?``).  Paraphrases are evaluation-only: no model is ever trained on them.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QA:
    """One question / answer pair (the answer a verbatim span of its document where derived)."""

    question: str
    answer: str


#: how a QA pair is put to a model, in training, unlearning and scoring alike (:mod:`fit_unlearn.text`)
QA_PROMPT = "Question: {question}\nAnswer:"


def qa_prompt(qa: QA) -> str:
    return QA_PROMPT.format(question=qa.question)


DOMAIN_FIELDS: dict[str, tuple[str, ...]] = {
    "personal": ("Name", "Age", "Address", "Occupation", "Description"),
    "code": ("Language", "Code", "Explanation"),
    "paper": ("Title", "Abstract", "Introduction", "Body", "Conclusion"),
    "harmful": ("Title", "Category", "Description", "AdditionalContext"),
}
DOMAINS = (*DOMAIN_FIELDS, "other")
_KNOWN = sorted({f for fs in DOMAIN_FIELDS.values() for f in fs}, key=len, reverse=True)
_FIELD_RE = re.compile(r"^(" + "|".join(_KNOWN) + r"):[ \t]*(.*)$")
_SENT_RE = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")
_FUNC_RE = re.compile(
    r"(?:def|func|fn|fun|function|class|struct)\s+([A-Za-z_]\w*)"
    r"|(?:static|public|private|int|double|float|void|string|String|long|bool|auto|var|let)\s+([A-Za-z_]\w*)\s*[(=]"
)


def parse_fields(text: str) -> dict[str, str]:
    """``Field: value`` blocks -> {field: value}.  Only known field names start a block, so code
    lines such as ``std::cout`` stay inside their field.  Values keep their inner newlines."""
    fields: dict[str, list[str]] = {}
    current: str | None = None
    for line in text.strip().splitlines():
        m = _FIELD_RE.match(line)
        if m and m.group(1) not in fields:
            current = m.group(1)
            fields[current] = [m.group(2)]
        elif current is not None:
            fields[current].append(line)
    return {k: "\n".join(v).strip() for k, v in fields.items() if "\n".join(v).strip()}


def detect_domain(text: str, fields: dict[str, str] | None = None) -> str:
    f = parse_fields(text) if fields is None else fields
    if "Name" in f and ({"Age", "Address", "Occupation"} & f.keys()):
        return "personal"
    if "Code" in f and ("Explanation" in f or "Language" in f):
        return "code"
    if "Title" in f and ({"Abstract", "Conclusion", "Introduction"} & f.keys()):
        return "paper"
    if "Title" in f and ({"Category", "Description"} & f.keys()):
        return "harmful"
    return "other"


def first_sentence(text: str) -> str:
    text = " ".join(text.split())
    return _SENT_RE.split(text, maxsplit=1)[0].strip()


def _code_name(code: str) -> str | None:
    for m in _FUNC_RE.finditer(code):
        name = m.group(1) or m.group(2)
        if name and name not in {"main", "Main", "new", "return"}:
            return name
    return None


def continuation_qa(text: str) -> QA:
    """First half of the first sentence of >= 6 words -> its second half (verbatim)."""
    words = " ".join(text.split()).split(" ")
    sentence = first_sentence(text).split(" ")
    if len(sentence) < 6:  # first sentence too short: use the first 24 words of the text
        sentence = words[:24]
    if len(sentence) < 2:
        return QA(
            question=sentence[0][: max(1, len(sentence[0]) // 2)],
            answer=sentence[0][len(sentence[0]) // 2 :] or sentence[0],
        )
    cut = len(sentence) // 2
    return QA(question=" ".join(sentence[:cut]), answer=" ".join(sentence[cut:]))


def _derived(text: str) -> list[tuple[QA, str]]:
    """(QA pair, a paraphrase of its question) for every field the document has, in a fixed order.

    The paraphrase asks for the same fact in other words; it is never trained on (neither theta_0 nor the
    retain-only model sees it), so it measures whether the knowledge is gone, not only the trained string."""
    f = parse_fields(text)
    domain = detect_domain(text, f)
    out: list[tuple[QA, str]] = []
    if domain == "personal":
        name = f["Name"].splitlines()[0].strip()
        if "Address" in f:
            out.append((QA(f"What is the address of {name}?", f["Address"]), f"Where does {name} live?"))
        if "Occupation" in f:
            out.append(
                (QA(f"What is the occupation of {name}?", f["Occupation"]), f"What does {name} do for a living?")
            )
        if "Age" in f:
            out.append((QA(f"How old is {name}?", f["Age"]), f"What is the age of {name}?"))
    elif domain == "code":
        lang = f.get("Language", "").strip() or "this"
        name = _code_name(f["Code"])
        if "Explanation" in f:
            if name:
                what, para = f"the {lang} function {name}", f"What is the purpose of {name}, written in {lang}?"
            else:
                first = f["Code"].splitlines()[0].strip()
                what = f"the {lang} snippet that begins `{first}`"
                para = f"What is the purpose of the {lang} code starting with `{first}`?"
            out.append((QA(f"What does {what} do?", first_sentence(f["Explanation"])), para))
        if name and "Language" in f:
            out.append(
                (
                    QA(f"In which programming language is {name} written?", f["Language"]),
                    f"Which language was used to write {name}?",
                )
            )
    elif domain == "paper":
        title = f["Title"]
        if "Abstract" in f:
            out.append(
                (
                    QA(f'What does the paper "{title}" study?', first_sentence(f["Abstract"])),
                    f'What is the research in "{title}" about?',
                )
            )
        if "Conclusion" in f:
            out.append(
                (
                    QA(f'What does the paper "{title}" conclude?', first_sentence(f["Conclusion"])),
                    f'What is the main finding of "{title}"?',
                )
            )
    elif domain == "harmful":
        title = f["Title"]
        if "Description" in f:
            out.append(
                (
                    QA(f'What does "{title}" claim?', first_sentence(f["Description"])),
                    f'What is asserted in "{title}"?',
                )
            )
        if "Category" in f:
            out.append(
                (
                    QA(f'Which category does "{title}" belong to?', f["Category"]),
                    f'What kind of content is "{title}"?',
                )
            )
    return [(q, p) for q, p in out if q.answer.strip() and _verbatim(q.answer, text)]


def has_known_fields(text: str) -> bool:
    """Whether :func:`derive_qa` finds a field to ask about in ``text`` (else it asks for a continuation)."""
    return bool(_derived(text))


def derive_qa(text: str, doc_id: str = "?", warn: bool = True) -> list[QA]:
    """QA pairs for one document; at least one, answers are verbatim spans of ``text``."""
    out = [q for q, _ in _derived(text)]
    if not out:
        if warn:
            log.warning("document %s: no known fields; using a continuation QA pair", doc_id)
        out = [continuation_qa(text)]
    return out


def derive_paraphrases(text: str) -> list[QA]:
    """Paraphrased questions with the answers of :func:`derive_qa`, in the same order (position i asks for
    the fact of QA pair i).  Empty for a document without known fields: a continuation pair has no
    paraphrase."""
    return [QA(p, q.answer) for q, p in _derived(text)]


def _verbatim(span: str, text: str) -> bool:
    return " ".join(span.split()) in " ".join(text.split())
