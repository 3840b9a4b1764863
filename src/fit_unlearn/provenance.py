"""Provenance recorded in every results file: versions, hashes, seeds, machine."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata as md
import os
import platform
import sys


def versions() -> dict[str, str]:

    out = {"python": sys.version.split()[0]}
    for pkg in (
        "fit-unlearn",
        "torch",
        "transformers",
        "accelerate",
        "sentence-transformers",
        "rouge-score",
        "wordfreq",
    ):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def machine() -> dict:
    """CPU model and the cores this process may use, memory, and the CUDA devices when torch is loaded."""
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 0
    try:
        memory = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        memory = None
    torch = sys.modules.get("torch")  # not imported for this: a CPU-only caller stays light
    gpus = []
    if torch is not None and torch.cuda.is_available():
        gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {"cpu": cpu, "cores": cores, "memory_gib": memory, "gpus": gpus}


def describe_machine(m: dict | None) -> str:
    """One line: ``2 cores of AMD EPYC ..., 24.0 GiB, no GPU``."""
    if not m:
        return "n/a"
    gpus = ", ".join(m.get("gpus") or []) or "no GPU"
    return f"{m.get('cores')} cores of {m.get('cpu') or 'an unknown CPU'}, {m.get('memory_gib')} GiB, {gpus}"


def provenance(**extra) -> dict:
    return {
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "platform": platform.platform(),
        "machine": machine(),
        "versions": versions(),
        **extra,
    }
