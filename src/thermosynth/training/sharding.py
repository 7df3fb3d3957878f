"""FSDP in the training loop: the EMA and the optimizer state sharded like the weights, gathered to be written.

Under FSDP2 (`accelerate launch --use_fsdp --fsdp_version 2`) every parameter of the trained model becomes a DTensor
of which each process holds one shard, and `accelerator.prepare` swaps the optimizer onto those shards. The loop
builds its EMA and optimizer (and restores a checkpoint into them) on whole tensors first, then shards both here the
same way, so that each process updates only its part of all three. Checkpoints, validation and exports need whole
tensors: `whole` gathers one, and every process must take part in that, in the same order; only the main process
then writes. Without FSDP each function here hands its input back unchanged.
"""

from __future__ import annotations

import torch
from torch.distributed.tensor import DTensor, distribute_tensor


def whole(tensor: torch.Tensor) -> torch.Tensor:
    """The full tensor: gathered from every process's shard (a collective) when it is sharded."""
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def shard_like(tensor: torch.Tensor, parameter: torch.Tensor) -> torch.Tensor:
    """A whole tensor of `parameter`'s shape, sharded the way `parameter` is. Every process holds the whole tensor
    (it came from the same file, or the same initialisation), so each one keeps its own part: no communication."""
    if not isinstance(parameter, DTensor):
        return tensor
    return distribute_tensor(tensor.to(parameter.device), parameter.device_mesh, parameter.placements,
                             src_data_rank=None)


def shard_optimizer_state(saved: dict, parameters: list[torch.Tensor]) -> dict:
    """An optimizer's `state_dict()` taken on whole parameters, with each per-parameter tensor (AdamW's moments)
    sharded like its parameter; scalars such as the step count stay as they are."""
    state = {
        index: {key: shard_like(value, parameters[index])
                if isinstance(value, torch.Tensor) and value.shape == parameters[index].shape else value
                for key, value in values.items()}
        for index, values in saved["state"].items()
    }
    return {**saved, "state": state}


def whole_state(model: torch.nn.Module,
                replacements: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The model's state dict, some entries replaced if asked (the trained parameters by their EMA), every tensor
    whole and detached on the CPU. A collective under FSDP: every process calls it."""
    replacements = replacements or {}
    return {name: whole(replacements.get(name, value)).detach().to("cpu", copy=True)
            for name, value in model.state_dict().items()}
