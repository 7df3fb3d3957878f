"""Training checkpoints in safetensors (weights, EMA, optimizer) plus JSON, written atomically.

Nothing here unpickles: optimizer state is flattened to named tensors and JSON scalars.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import torch
from diffusers.training_utils import EMAModel
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from thermosynth.training.sharding import whole, whole_state

logger = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "step-"


def trained_parameters(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """The parameters training moves, by name: all of them, except those a task froze (a LoRA run trains only its
    adapters and conv_in). The optimizer, the EMA and the checkpoints' EMA file all hold exactly these."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    """Finished checkpoints of a run, oldest first (temporary folders of an interrupted save are ignored)."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and p.name.startswith(CHECKPOINT_PREFIX)]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX) :]))


def _flatten(prefix: str, values: dict, tensors: dict, scalars: dict) -> None:
    """Optimizer state as dotted names: tensors for safetensors, the rest for JSON. Nested dicts (bitsandbytes keeps
    its quantisation state in one) become further dotted levels."""
    for key, value in values.items():
        name = f"{prefix}.{key}"
        if isinstance(value, dict):
            _flatten(name, value, tensors, scalars)
        elif isinstance(value, torch.Tensor):
            tensors[name] = whole(value).detach().to("cpu", copy=True).contiguous()  # bitsandbytes shares qmaps
        else:
            scalars[name] = value


def _optimizer_files(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """The optimizer's state as whole tensors by dotted name, and the JSON beside them."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        _flatten(str(index), values, tensors, scalars)
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _load_optimizer(optimizer: torch.optim.Optimizer, folder: Path) -> None:
    meta = json.loads((folder / "optimizer.json").read_text())
    state: dict[int, dict] = {}
    for name, value in [*load_file(folder / "optimizer.safetensors").items(), *meta["scalars"].items()]:
        index, *path, key = name.split(".")
        level = state.setdefault(int(index), {})
        for part in path:
            level = level.setdefault(part, {})
        level[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_checkpoint(
    run_dir: Path, step: int, model: torch.nn.Module, ema: EMAModel, optimizer: torch.optim.Optimizer, keep: int,
    elapsed_s: float = 0.0, write: bool = True,
) -> Path:
    """Write checkpoint `step` atomically and drop all but the last `keep`. Under FSDP every process calls it,
    because the shards are gathered into whole tensors, and only the one with `write` writes."""
    folder = Path(run_dir) / "checkpoints"
    final = folder / f"{CHECKPOINT_PREFIX}{step:07d}"
    weights = whole_state(model)
    ema_shadow, ema_settings = _ema_file(ema, list(trained_parameters(model)))
    optimizer_tensors, optimizer_json = _optimizer_files(optimizer)
    if not write:
        return final
    tmp = folder / f".{final.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in weights.items()}, tmp / "model.safetensors")
    save_file(ema_shadow, tmp / "ema.safetensors", metadata=ema_settings)
    save_file(optimizer_tensors, tmp / "optimizer.safetensors")
    (tmp / "optimizer.json").write_text(json.dumps(optimizer_json))
    (tmp / "state.json").write_text(json.dumps({"step": step, "elapsed_s": elapsed_s}))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in checkpoint_dirs(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _ema_file(ema: EMAModel, names: list[str]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """EMAModel.state_dict() for one safetensors file: the whole shadow weights by parameter name, and the settings
    and step count as JSON for the file's metadata."""
    state = ema.state_dict()
    shadow = state.pop("shadow_params")
    tensors = {n: whole(p).detach().contiguous().cpu() for n, p in zip(names, shadow, strict=True)}
    return tensors, {"ema": json.dumps(state)}


def _load_ema(ema: EMAModel, names: list[str], path: Path, state_json: dict) -> None:
    with safe_open(path, framework="pt") as f:
        settings = (f.metadata() or {}).get("ema")
        shadow = [f.get_tensor(name) for name in names]
    if settings is None:  # checkpoints before the metadata: the step count sat in state.json
        state = {**ema.state_dict(), "optimization_step": state_json["ema_optimization_step"]}
    else:
        state = json.loads(settings)
    ema.load_state_dict({**state, "shadow_params": shadow})


def checkpoint_state(folder: Path) -> dict:
    """step and elapsed_s (training seconds so far; 0 in checkpoints older than it)."""
    return {"elapsed_s": 0.0, **json.loads((Path(folder) / "state.json").read_text())}


def load_checkpoint(
    folder: Path, model: torch.nn.Module, ema: EMAModel, optimizer: torch.optim.Optimizer | None
) -> int:
    """Restore a checkpoint into the given objects; returns the number of steps it had completed."""
    model.load_state_dict(load_file(folder / "model.safetensors"))
    state = json.loads((folder / "state.json").read_text())
    _load_ema(ema, list(trained_parameters(model)), folder / "ema.safetensors", state)
    if optimizer is not None:
        _load_optimizer(optimizer, folder)
    return state["step"]
