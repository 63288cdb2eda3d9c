"""FSDP2 (`torch.distributed.fsdp.fully_shard`) of the frozen base, for models that do not fit one device.

`model.fsdp_shards: N` splits every decoder layer's frozen weights over groups of N ranks; each layer is gathered for
its forward (and again for a backward through it) and freed after. What stays whole on every rank:

- the LoRA parameters (small, trained; their gradients are all-reduced as without FSDP, and checkpoints hold them
  unchanged),
- the token embedding, the final norm and the LM head: the Taylor grid multiplies by the whole embedding matrix,
  the judge calls the head on its own, and tied embeddings (SmolLM2, the small Qwen3) are one tensor used twice.

The judge and the reference share the sharded base with the player (the adapter switched off), as on one device.
Every rank of a group must call the sharded layers the same number of times with the same shapes, so the ranks of a
group play the same texts (`frost.run.distributed`): FSDP here buys memory, and the groups (replicas) buy speed.
"""

from __future__ import annotations

from typing import Any

import torch

from frost.errors import ConfigError
from frost.models import SHARDED_FLAG
from frost.run.distributed import World


def decoder_layers(model: Any) -> list[torch.nn.Module]:
    """The transformer blocks of a causal LM (a peft model or a plain one): `get_decoder().layers`."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else None
    layers = getattr(decoder, "layers", None)
    if decoder is None or layers is None or len(layers) == 0:
        raise ConfigError(
            f"model.fsdp_shards: {type(base).__name__} has no decoder with a `layers` list to shard; "
            "set model.fsdp_shards: 1"
        )
    return list(layers)


def shard_frozen_base(model: Any, world: World, device: torch.device) -> Any:
    """Shard the frozen weights of every decoder layer of `model` over this rank's group of `world.shard_size`
    ranks, moving the shards to `device`; the LoRA parameters, embeddings, final norm and head move there whole.
    Returns the group's process group (for `frost.run.distributed.agreement`).

    The decoder itself becomes the FSDP root (it owns no sharded weight), so a forward through it, from the player,
    the judge or the reference, frees each layer's gathered weights right after using them."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import FSDPModule, fully_shard

    layers = decoder_layers(model)
    if device.type == "cuda":  # as frost.models.load_model does for a model loaded onto the GPU
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = base.get_decoder()
    trained = {p for p in model.parameters() if p.requires_grad}
    in_layers = {p for layer in layers for p in layer.parameters()}
    whole = {p for p in model.parameters() if p not in in_layers} | trained
    with torch.no_grad():  # what stays whole moves now; fully_shard moves each layer's shards itself
        for p in whole:
            p.data = p.data.to(device)
        for module in model.modules():
            for name, buffer in module.named_buffers(recurse=False):
                module._buffers[name] = buffer.to(device)
    if any(isinstance(layer, FSDPModule) for layer in layers):
        raise ConfigError("model.fsdp_shards: this base is sharded already; load it again for another adapter")
    mesh = init_device_mesh(device.type, (world.replicas, world.shard_size), mesh_dim_names=("replicate", "shard"))[
        "shard"
    ]
    for layer in layers:
        fully_shard(layer, mesh=mesh, ignored_params=trained & set(layer.parameters()))
    fully_shard(decoder, mesh=mesh, ignored_params=whole & set(decoder.parameters()))
    for holder in (model, base):
        setattr(holder, SHARDED_FLAG, True)
    return mesh.get_group()


def sharded_bytes(model: Any) -> tuple[int, int]:
    """(bytes of this rank's shards, bytes of the same parameters whole): what sharding saved on this rank."""
    from torch.distributed.tensor import DTensor

    local = whole = 0
    for p in model.parameters():
        if isinstance(p, DTensor):
            local += p.to_local().numel() * p.element_size()
            whole += p.numel() * p.element_size()
    return local, whole
