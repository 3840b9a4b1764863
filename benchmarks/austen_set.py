"""A data set of another kind than PCH: passages of Jane Austen's six novels (public domain), the stand-in for
unlearning passages of a book (copyrighted text) that issue 13 asks the benchmark to be checked on.

PCH documents are "Field: value" blocks about invented people, programs, papers and harms, full of names and
identifiers no other document holds. These are paragraphs of English prose: the same characters, places and
words recur across passages, the base model has read such text, and no field tells the engine what to ask, so
each document is asked to continue its own opening (the engine's question for a document without fields).

Passages of 400-1,000 characters are drawn at random from all six novels (seeded) and split into forget, retain
and holdout; write them as PCH-form JSON lists and run the usual commands on the folder:

    pip install rdata    # reads R's lazy-load database; a benchmark helper, not a dependency of fit-unlearn
    apt-get download r-cran-janeaustenr && dpkg -x r-cran-janeaustenr_*.deb austen   # or the installed package
    python benchmarks/austen_set.py --rdata austen/usr/lib/R/site-library/janeaustenr/data --out fit_data/austen
    fit-unlearn prepare --data fit_data/austen --out fit_runs/austen
    fit-unlearn bench --prepared fit_runs/austen --out fit_runs/bench-austen --methods ga-rows-loop,npo,fit ...
"""

from __future__ import annotations

import argparse
import json
import random
import re
import zlib
from pathlib import Path

NOVELS = ("emma", "mansfieldpark", "northangerabbey", "persuasion", "prideprejudice", "sensesensibility")


def read_novels(folder: Path) -> dict[str, list[str]]:
    """Each novel's lines, from the package's ``Rdata.rdb`` / ``Rdata.rdx`` (R's lazy-load database: an index of
    offsets, each object zlib-compressed behind a 4-byte length)."""
    import rdata

    index = rdata.read_rds(folder / "Rdata.rdx")
    rdb = (folder / "Rdata.rdb").read_bytes()
    out = {}
    for name in NOVELS:
        off, length = (int(x) for x in index["variables"][name])
        raw = zlib.decompress(rdb[off + 4 : off + length])
        out[name] = [str(line) for line in rdata.conversion.convert(rdata.parser.parse_data(raw, expand_altrep=True))]
    return out


def paragraphs(lines: list[str], lo: int, hi: int) -> list[str]:
    """Blank-line separated paragraphs of ``lo``-``hi`` characters, whitespace collapsed; headings dropped."""
    out, cur = [], []
    for line in [*lines, ""]:
        if line.strip():
            cur.append(line.strip())
            continue
        text = re.sub(r"\s+", " ", " ".join(cur)).strip()
        cur = []
        if lo <= len(text) <= hi and not re.match(r"^(CHAPTER|VOLUME)\b", text):
            out.append(text)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rdata", type=Path, default=Path("/usr/lib/R/site-library/janeaustenr/data"))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--n-forget", type=int, default=30)
    ap.add_argument("--n-retain", type=int, default=30)
    ap.add_argument("--n-holdout", type=int, default=20)
    ap.add_argument("--min-chars", type=int, default=400)
    ap.add_argument("--max-chars", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    pool = [p for lines in read_novels(args.rdata).values() for p in paragraphs(lines, args.min_chars, args.max_chars)]
    need = args.n_forget + args.n_retain + args.n_holdout
    if len(pool) < need:
        raise SystemExit(f"only {len(pool)} passages of {args.min_chars}-{args.max_chars} characters; ask for fewer")
    picked = random.Random(args.seed).sample(pool, need)
    args.out.mkdir(parents=True, exist_ok=True)
    splits = {
        "forget": picked[: args.n_forget],
        "retain": picked[args.n_forget : args.n_forget + args.n_retain],
        "holdout": picked[args.n_forget + args.n_retain :],
    }
    for split, docs in splits.items():
        (args.out / f"{split}.json").write_text(json.dumps(docs, indent=1, ensure_ascii=False))
    print(json.dumps({"passages_in_pool": len(pool), **{k: len(v) for k, v in splits.items()}, "out": str(args.out)}))


if __name__ == "__main__":
    main()
