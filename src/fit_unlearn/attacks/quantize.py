"""Quantization attack (Zhang et al., ICLR 2025): reload the unlearned weights in 8 / 4 bits and measure.

Back-ends: bitsandbytes on CUDA (LLM.int8 / NF4); optimum-quanto on CPU (weight-only int8 / int4,
group-wise); ``rtn`` is a plain round-to-nearest per-channel *fake* quantization fallback, labelled so
in every output.  The default model comes from a Q4_1 GGUF (4-bit, blocks of 32), so the attack must
not use that same grid: quanto's int4 uses groups of 128 (96 on the default model's 576-wide rows: the
largest multiple of 32 up to 128 that divides the width), each with its own scale and offset, and int8 is
per-channel.

Transformers and quanto keep the token embeddings (and ``lm_head``) in full precision; GGUF files quantize
them too.  ``embeddings=True`` also rounds the input-embedding matrix, and with it an output layer tied to
it, or an untied output layer as well, to the same grid (quanto's own ``QLinear`` quantizer, then
dequantized: the values a 4-bit file would hold), so an unlearning that lives in the embedding rows
(``update.trainable: rows``) meets the attack as well.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
from pathlib import Path

import torch

from fit_unlearn.attacks.common import recovery, run_edits_rows, run_model_and_forgotten
from fit_unlearn.data.prepared import prepared_data
from fit_unlearn.errors import ConfigError
from fit_unlearn.evaluation import Reference, evaluate_model
from fit_unlearn.layout import GOLD_MODELS, PreparedDir
from fit_unlearn.models import load_model, model_hash, prepare_tokenizer

log = logging.getLogger(__name__)
METHODS = ("auto", "quanto", "bnb", "rtn")


def _rtn_weight_(w: torch.Tensor, bits: int) -> None:
    qmax = 2 ** (bits - 1) - 1
    scale = w.abs().amax(dim=1, keepdim=True).clamp_min(1e-8) / qmax
    w.copy_((w / scale).round().clamp(-qmax - 1, qmax) * scale)


def _rtn_(model, bits: int) -> None:
    with torch.no_grad():
        for name, mod in model.named_modules():
            if isinstance(mod, torch.nn.Linear) and "lm_head" not in name:
                _rtn_weight_(mod.weight, bits)


def _round_to_grid_(w: torch.Tensor, bits: int, method: str) -> None:
    """Round a [rows, width] weight in place to the grid ``method`` gives a Linear layer of that shape: quanto's
    own ``QLinear`` (int4 groups along the width, int8 per row), dequantized; or ``rtn``'s per-row grid."""
    if method == "rtn":
        _rtn_weight_(w, bits)
        return
    from optimum.quanto import qint4, qint8, quantize_module

    lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=False, device="meta")
    lin.weight = torch.nn.Parameter(w.detach().clone(), requires_grad=False)
    q = quantize_module(lin, weights=qint8 if bits == 8 else qint4)
    q.freeze()
    w.copy_(q.weight.dequantize().to(w.dtype))


def _quantize_embeddings_(model, bits: int, method: str) -> None:
    """Round the input-embedding matrix and the output layer in place to the ``bits``-bit grid of ``method``.
    Tied, they are one tensor; untied (row edits untie them, ``docs/rows.md``), both are rounded, as a GGUF file
    rounds ``token_embd`` and ``output``."""
    emb = model.get_input_embeddings().weight
    out = model.get_output_embeddings()
    tensors = [emb] + ([out.weight] if out is not None and out.weight.data_ptr() != emb.data_ptr() else [])
    with torch.no_grad():
        for w in tensors:
            _round_to_grid_(w, bits, method)


def bnb_available() -> bool:
    """Whether bitsandbytes is installed (located only: importing it initialises CUDA)."""
    return importlib.util.find_spec("bitsandbytes") is not None


def check_bnb(device: str) -> None:
    """One-line errors for the bitsandbytes back-end asked for where it cannot run."""
    if not device.startswith("cuda"):
        raise ConfigError("bitsandbytes quantization needs --device cuda; on CPU use --method quanto")
    if not bnb_available():
        raise ConfigError(
            "bitsandbytes quantization needs the bitsandbytes package: pip install 'fit-unlearn[gpu]' "
            "(or --method quanto)"
        )


def bnb_config(bits: int):
    """The BitsAndBytesConfig of the attack: LLM.int8 (8 bits) or NF4 with bf16 compute (4 bits); the whole
    model quantized but the output layer (transformers keeps ``lm_head`` in 16 bits)."""
    from transformers import BitsAndBytesConfig

    check_bits(bits)
    if bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)


def check_bits(bits: int) -> None:
    if bits not in (4, 8):
        raise ConfigError(f"--bits must be 8 or 4, got {bits}")


def resolve_method(method: str, device: str, embeddings: bool = False) -> str:
    """The back-end ``method`` names on ``device`` ("auto" resolved: bitsandbytes on CUDA when installed and the
    embeddings are not asked for, quanto otherwise); refused in one line where it cannot run."""
    if method not in METHODS:
        raise ConfigError(f"unknown quantization method {method!r}; choose one of {', '.join(METHODS)}")
    if method == "auto":
        method = "bnb" if device.startswith("cuda") and bnb_available() and not embeddings else "quanto"
    if method == "bnb":
        check_bnb(device)
        if embeddings:
            raise ConfigError("--embeddings needs --method quanto or rtn: bitsandbytes keeps the embeddings in 16 bits")
    return method


def quantize_model(path: str | Path, bits: int, method: str = "auto", device: str = "cpu", *, embeddings: bool = False):
    """Load the model at ``path`` with ``bits``-bit weights; returns (model, tokenizer, method label).

    ``embeddings``: also round the token embeddings and the output layer to the same grid."""
    check_bits(bits)
    method = resolve_method(method, device, embeddings)
    if method == "bnb":
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(
            str(path), quantization_config=bnb_config(bits), device_map={"": device}
        )
        _, tok = load_model(path, device="cpu")
        prepare_tokenizer(tok)
        return model.eval(), tok, f"bitsandbytes {'int8' if bits == 8 else 'nf4'}"
    model, tok = load_model(path, device=device)
    if method == "quanto":
        try:
            from optimum.quanto import freeze, qint4, qint8, quantize
        except ImportError:
            raise ConfigError(
                "the quanto back-end needs optimum-quanto: pip install optimum-quanto "
                "(or --method rtn for a labelled fake-quant fallback)"
            ) from None
        quantize(model, weights=qint8 if bits == 8 else qint4, exclude=["lm_head"])
        freeze(model)
        label = f"optimum-quanto weight-only int{bits}"
    else:
        _rtn_(model, bits)
        label = f"FAKE-QUANT fallback: round-to-nearest per-channel int{bits} (not a real kernel)"
    if embeddings:
        _quantize_embeddings_(model, bits, method)
        label += ", token embeddings too (rounded to the same grid)"
    return model.eval(), tok, label


def quantize_attack(
    models: dict[str, Path],
    bits_list: list[int],
    forget,
    retain,
    reference,
    *,
    method: str = "auto",
    device: str = "cpu",
    embeddings: bool = False,
    batch_size: int = 16,
    t: int | None = None,
    T: int | None = None,
) -> dict:
    """Scores of each model at full precision and at each bit width; recovery of the unlearned one.

    ``models`` maps labels to paths and must hold "unlearned", "theta0" and "retain_only"."""
    for bits in bits_list:
        check_bits(bits)
    resolve_method(method, device, embeddings)  # refused before any model is loaded and scored
    out: dict = {"method": None, "embeddings": embeddings, "models": {}}
    cache_method = method + ("+embeddings" if embeddings else "")  # unchanged key without the option
    for label, path in models.items():
        rows = {}
        cache = _Cache(Path(path), forget, retain, cache_method, t, T) if label in CACHEABLE else None
        hit = cache.get(bits_list) if cache else None
        if hit is not None:  # theta_0 / retain-only are the same for every run: scored once per setting
            out["models"][label] = hit["rows"]
            out["method"] = hit["method"]
            continue

        def score(m, tok) -> dict:
            return _summ(
                evaluate_model(
                    m,
                    tok,
                    forgotten=forget,
                    retain=retain,
                    reference=reference,
                    t=t,
                    T=T,
                    probe=False,
                    batch_size=batch_size,
                )
            )

        m, tok = load_model(path, device=device)
        rows["fp"] = score(m, tok)
        del m
        for bits in bits_list:
            qm, qtok, label_method = quantize_model(path, bits, method, device, embeddings=embeddings)
            out["method"] = label_method
            rows[f"int{bits}"] = score(qm, qtok)
            rows[f"int{bits}"]["method"] = label_method
            del qm
        out["models"][label] = rows
        if cache:
            cache.put(bits_list, {"rows": rows, "method": out["method"]})
    f0 = out["models"]["theta0"]["fp"]["forget_score"]
    unl = out["models"]["unlearned"]
    out["recovery"] = {
        f"int{b}": recovery(unl[f"int{b}"]["forget_score"], unl["fp"]["forget_score"], f0) for b in bits_list
    }
    return out


def quantize_run(
    run: str | Path,
    bits_list: list[int],
    *,
    method: str = "auto",
    device: str = "cpu",
    embeddings: bool | None = None,
) -> dict:
    """:func:`quantize_attack` on a run directory: its final model next to theta_0 and the retain-only model,
    scored on the documents the run forgot at t = len(forgotten) of T = the prepared forget set.  ``embeddings``
    None: round them when the run edited embedding rows (its ``update.trainable: rows``), where its edits live."""
    model_path, forgotten, prepared = run_model_and_forgotten(Path(run))
    if embeddings is None:
        embeddings = run_edits_rows(Path(run))
    splits = prepared_data(prepared)
    return quantize_attack(
        {"unlearned": model_path, **{name: PreparedDir(prepared).model(name) for name in GOLD_MODELS}},
        list(bits_list),
        forgotten,
        splits.retain_eval,
        Reference.load(prepared),
        method=method,
        device=device,
        embeddings=embeddings,
        t=len(forgotten),
        T=len(splits.forget),
    )


CACHEABLE = ("theta0", "retain_only")


class _Cache:
    """Attack results of an unchanging model (theta_0, retain-only), kept next to its weights."""

    def __init__(self, path: Path, forget, retain, method: str, t, T):

        ids = json.dumps(["v2", [d.id for d in forget], [d.id for d in retain], method, t, T, model_hash(path)])
        self.key = hashlib.sha256(ids.encode()).hexdigest()[:16]
        self.file = path / ".fit_unlearn_attack_cache.json"

    def _load(self) -> dict:

        try:
            return json.loads(self.file.read_text())
        except (OSError, ValueError):
            return {}

    def get(self, bits_list):
        return self._load().get(f"{self.key}-{'-'.join(map(str, bits_list))}")

    def put(self, bits_list, value) -> None:

        data = self._load()
        data[f"{self.key}-{'-'.join(map(str, bits_list))}"] = value
        try:
            self.file.write_text(json.dumps(data))
        except OSError:
            pass


def _summ(res: dict) -> dict:
    return {
        "forget_score": res["forget"]["score"],
        "retain_score": res["retain"]["score"],
        "forget": res["forget"],
        "retain": res["retain"],
        "forget_paraphrase_score": (res["forget"].get("paraphrase") or {}).get("score"),
        "forget_degree_strict": res.get("forget_degree_strict"),
        "retain_utility": res.get("retain_utility"),
    }
