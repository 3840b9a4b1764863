"""Provenance recorded in every results file: versions, hashes, seeds, machine."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata as md
import platform
import sys


def versions() -> dict[str, str]:

    out = {"python": sys.version.split()[0]}
    for pkg in ("fit-unlearn", "torch", "transformers", "accelerate", "sentence-transformers", "rouge-score"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def provenance(**extra) -> dict:
    return {
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "platform": platform.platform(),
        "versions": versions(),
        **extra,
    }
