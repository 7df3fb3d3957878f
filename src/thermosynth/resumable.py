"""Output folders that a re-run resumes, and the record of the settings each was made with.

The batch jobs (`translate`, `generate`, `evaluate --model`, `synthesize`, `masks`, VLM captioning) write only what
is missing from their output folder, so an interrupted run resumes. A re-run with other settings (another model,
step count, seed...) must not add to such a folder or, worse, take the outputs already there as its own: `evaluate`
would score images another model made under this one's name. So each folder keeps the settings it was made with in
one JSON file, and a run whose settings differ is refused with the names of what differs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection
from pathlib import Path

import torch

from thermosynth.data.images import atomic_write


def weights_fingerprint(*networks: torch.nn.Module) -> str:
    """A short hash of the networks' weights: which model made an output, whatever its folder is called."""
    digest = hashlib.sha256()
    for network in networks:
        for name, tensor in sorted(network.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def model_settings(pipeline) -> dict[str, str]:
    """Which model makes a pipeline's images, for a record: the fingerprint of what turns its input into pixels (the
    UNet and the autoencoder, whose decoder can be fine-tuned under the same UNet, or pix2pix's generator) as loaded,
    and the precision it runs in, which changes the fingerprint too and is named so that a refusal says so."""
    networks = [pipeline.unet, pipeline.vae] if "unet" in pipeline.components else [pipeline.generator]
    return {"model": weights_fingerprint(*networks), "dtype": str(next(networks[0].parameters()).dtype)}


def check_settings(record: Path, settings: dict, what: str) -> None:
    """Refuse to add to a folder whose `record` shows other `settings`; a folder without a record is new."""
    if not record.is_file():
        return
    previous, settings = json.loads(record.read_text()), json.loads(json.dumps(settings))  # tuples as JSON lists
    changed = differences(previous, settings)
    if changed:
        raise ValueError(f"{record.parent} holds {what} made with other settings ({changed}; see {record.name}). "
                         f"{RESUME_HINT}")


RESUME_HINT = "Use a new --out folder, or repeat the original command to resume it."


def differences(previous: dict, current: dict, ignore: Collection[str] = ()) -> str:
    """What differs between a record and the settings of the run that would add to it, as a phrase ("steps
    differs", "model, steps differ"); "" when they agree on every key outside `ignore`."""
    changed = sorted(key for key in previous.keys() | current.keys()
                     if key not in ignore and previous.get(key) != current.get(key))
    return f"{', '.join(changed)} {'differs' if len(changed) == 1 else 'differ'}" if changed else ""


def write_settings(record: Path, settings: dict) -> None:
    """Write the record (once: the first output's writer does it, so that a run that fails before any output
    leaves nothing that would refuse a corrected re-run)."""
    if not record.is_file():
        atomic_write(record, lambda tmp: tmp.write_text(json.dumps(settings, indent=2) + "\n"))
