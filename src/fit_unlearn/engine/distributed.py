"""Data-parallel and sharded (FSDP2) execution of the engine, and rank-correct retain sampling.

Three ways to run with several processes (``fit-unlearn run --distributed``, launched by ``accelerate launch``
or ``torchrun``):

* **replicated** (``shard="none"``): every rank holds the whole model; after each backward the gradients of the
  request's trainable parameters are averaged by hand (``update._all_reduce_grads``).
* **FSDP2 through accelerate** (``accelerate launch --config_file examples/accelerate/fsdp.yaml``, which must say
  ``fsdp_version: 2``): the model and the frozen reference are sharded by accelerate's own FSDP2 preparation
  (its wrap policy, mixed precision, CPU offload and RAM-efficient loading settings).  Accelerate enables its
  FSDP plugin on accelerators only: on CPU it silently runs plain multi-CPU data parallel (its state keeps
  ``DistributedType.MULTI_CPU`` and drops the plugin, even when one is passed to ``Accelerator``).
* **FSDP2 directly** (``--shard fsdp`` without an accelerate FSDP config): ``torch.distributed.fsdp.fully_shard``
  on every decoder layer and the root, over a 1-D mesh of all ranks; this is what runs on CPU (gloo) in the
  tests, and it works on GPUs (nccl) too.

FSDP2 shards each parameter separately (a DTensor per parameter), so FIT's changing trainable set needs nothing
special: a request sets ``requires_grad`` on the sharded parameters it trains (FSDP2 copies the flag onto the
unsharded parameter at every all-gather and reduce-scatters only gradients that exist), and its fresh AdamW is
built over those sharded parameters, so its state is sharded too.  FSDP2 averages gradients across ranks itself:
the hand all-reduce is skipped (:func:`reduces_gradients`).

Under sharding every forward is a collective (parameters are all-gathered), so every rank must run the same
forwards in the same order: strategies' planning, the closed loop's checks, evaluation and generation run on
all ranks with identical inputs (generation with ``synced_gpus``), only the main process writes; the reference
output cache is off (its hits would differ between ranks that draw different retain documents); a checkpoint
gathers the full state dict (a collective) and the main process writes it as a plain Hugging Face model.

DeepSpeed (ZeRO-3) is refused: its engine owns one optimizer built once over a fixed set of trainable
parameters, which cannot express a fresh AdamW over a different subset for every request.  FSDP1 is refused
for a related reason (a flat parameter per unit; use ``fsdp_version: 2``).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Literal

import torch
import torch.distributed as dist

from fit_unlearn.errors import ConfigError
from fit_unlearn.layers import decoder_layers, unwrap

ShardMode = Literal["auto", "none", "fsdp"]
SHARD_MODES: tuple[str, ...] = ("auto", "none", "fsdp")


# ---- rank-correct sampling ---------------------------------------------------------------------------
def rank_of(accelerator) -> int:
    return accelerator.process_index if accelerator is not None else 0


def world_of(accelerator) -> int:
    return accelerator.num_processes if accelerator is not None else 1


def retain_stream(rng: random.Random, seed: int, rank: int) -> random.Random:
    """The random stream a rank draws its retain batches from.

    Rank 0 (and a single process) draws from the request's own stream ``rng`` (seeded with the request seed,
    also used for forget-side choices such as the refusals), so single-process results are unchanged.  Rank
    ``r > 0`` draws from a stream of its own, seeded from (request seed, r): under data parallel each rank adds
    different retain documents, instead of every rank drawing the same batch.
    """
    if rank == 0:
        return rng
    digest = hashlib.sha256(f"retain:{seed}:{rank}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "little"))


def all_ranks_true(flag: bool, accelerator, device) -> bool:
    """True when ``flag`` holds on every rank (a collective under data parallel; ``flag`` itself alone)."""
    if world_of(accelerator) <= 1 or not dist.is_initialized():
        return flag
    t = torch.tensor([1 if flag else 0], device=device, dtype=torch.int32)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


# ---- sharding ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sharding:
    """How the engine's models are placed across ranks: ``none`` (whole model on every rank),
    ``accelerate`` (accelerate's FSDP2 preparation from the launch config) or ``fsdp`` (torch's
    ``fully_shard`` per decoder layer, applied here)."""

    kind: Literal["none", "accelerate", "fsdp"]
    accelerator: object = None

    @property
    def sharded(self) -> bool:
        return self.kind != "none"

    @property
    def load_device(self) -> str | None:
        """Where a model is loaded before sharding (None: the engine's device)."""
        return "cpu" if self.sharded else None

    def shard(self, model):
        """Shard ``model`` in place (it is returned, wrapped as FSDP2 modules); a no-op when not sharded."""
        if self.kind == "none":
            return model
        if self.kind == "accelerate":
            from accelerate.utils import fsdp2_prepare_model

            model = fsdp2_prepare_model(self.accelerator, model)
        else:
            from torch.distributed.device_mesh import init_device_mesh
            from torch.distributed.fsdp import fully_shard

            device = torch.device(self.accelerator.device)
            mesh = init_device_mesh(device.type, (self.accelerator.num_processes,))
            _, layers = decoder_layers(model)
            for layer in layers:
                fully_shard(layer, mesh=mesh)
            fully_shard(model, mesh=mesh)
        # Hugging Face generate then runs with synced_gpus: every rank keeps stepping (and all-gathering)
        # until all ranks are done, so generation cannot leave a rank waiting in a collective
        model._is_fsdp_managed_module = True
        return model

    def full_state_dict(self, model) -> dict | None:
        """The model's full state dict on the main process (plain CPU tensors), {} on the others; None when not
        sharded (save the model itself).  A collective: every rank must call it."""
        if not self.sharded:
            return None
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def load_full_state_dict(self, model, state_dict: dict) -> None:
        """Load a full (unsharded) state dict into ``model``: each rank keeps its shard."""
        if not self.sharded:
            unwrap(model).load_state_dict(state_dict)
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(model, state_dict, options=StateDictOptions(full_state_dict=True))


def resolve_sharding(accelerator, shard: str = "auto") -> Sharding:
    """The sharding asked for by the launch (accelerate's config) and ``shard`` (``auto``: follow the launch;
    ``fsdp``: shard with FSDP2 even where accelerate does not, e.g. on CPU; ``none``: replicate)."""
    if shard not in SHARD_MODES:
        raise ConfigError(f"shard: unknown mode {shard!r}; choose one of {', '.join(SHARD_MODES)}")
    if accelerator is None:
        if shard == "fsdp":
            raise ConfigError(
                "--shard fsdp needs several processes: launch with `accelerate launch` or `torchrun` and --distributed"
            )
        return Sharding("none")
    kind = str(getattr(accelerator.distributed_type, "value", accelerator.distributed_type)).upper()
    if kind == "DEEPSPEED":
        raise ConfigError(
            "DeepSpeed is not supported by the engine: its engine owns one optimizer built once over a fixed set "
            "of trainable parameters, while every request here trains a different subset with a fresh AdamW. "
            "Shard with FSDP2 instead (accelerate launch --config_file examples/accelerate/fsdp.yaml)"
        )
    if kind == "FSDP":
        version = getattr(accelerator.state.fsdp_plugin, "fsdp_version", 1)
        if version != 2:
            raise ConfigError(
                "FSDP1 is not supported (it flattens each unit's parameters into one, while each request trains "
                "a different subset): set fsdp_version: 2 in the accelerate config"
            )
        if shard == "none":
            raise ConfigError("--shard none contradicts the accelerate launch config, which asks for FSDP")
        return Sharding("accelerate", accelerator)
    if shard == "fsdp":
        if accelerator.num_processes < 2:
            raise ConfigError("--shard fsdp needs at least 2 processes")
        return Sharding("fsdp", accelerator)
    return Sharding("none", accelerator)


def reduces_gradients(model) -> bool:
    """True when ``model`` averages gradients across ranks itself (FSDP2, DDP): no hand all-reduce then."""
    from torch.distributed.fsdp import FSDPModule
    from torch.nn.parallel import DistributedDataParallel

    return isinstance(model, FSDPModule | DistributedDataParallel)


def check_supported(cfg, sharding: Sharding) -> None:
    """Refuse, before any work, the options that do not run sharded yet."""
    if not sharding.sharded:
        return
    if cfg.update.saliency is not None:
        raise ConfigError("update.saliency is not supported with sharding (its mask needs whole gradients)")
    if cfg.update.project_retain:
        raise ConfigError("update.project_retain is not supported with sharding (it needs whole gradients)")
    if cfg.eval.downstream:
        raise ConfigError("eval.downstream is not supported with sharding (lm-eval runs on one process)")
    if cfg.loop_enabled and cfg.loop.target in ("base", "both"):
        raise ConfigError(
            f"loop.target: {cfg.loop.target} is not supported with sharding (every rank would hold the whole base "
            "model); use loop.target: holdout or --shard none"
        )
    if cfg.update.trainable == "rows":
        raise ConfigError(
            "update.trainable: rows is not supported with sharding (it edits a few embedding rows: one device "
            "holds the model for inference, and the edit needs no more); use --shard none"
        )
    if cfg.update.trainable == "lora":
        raise ConfigError(
            "update.trainable: lora is not supported with sharding yet (adapters are injected per request into a "
            "model FSDP has already sharded); LoRA rarely needs it: see docs/lora.md for what fits one device"
        )


__all__ = [
    "SHARD_MODES",
    "Sharding",
    "all_ranks_true",
    "check_supported",
    "rank_of",
    "reduces_gradients",
    "resolve_sharding",
    "retain_stream",
    "world_of",
]
