"""Models trained by thermosynth and shipped inside the package, found by name (fp16 safetensors, read in fp32).

Both pipelines share one autoencoder (``autoencoder/``), stored once; the text-to-thermal model reads prompts with
the packaged all-MiniLM-L6-v2, which is loaded from its own package rather than stored again. Each model's folder
holds a model card (README.md) with its data, recipe and measured quality. `benchmarks/shipped/` made them.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

ROOT = Path(__file__).parent
SHIPPED = ("v2t-roadscene", "t2ir-hituav")


def is_shipped(name: str) -> bool:
    return name in SHIPPED


def is_installed(name: str) -> bool:
    """The shipped model's files are in the package (a checkout may leave the weights out)."""
    return is_shipped(name) and (ROOT / name / "model_index.json").is_file()


def shipped_class_name(name: str) -> str:
    return json.loads((ROOT / name / "model_index.json").read_text())["_class_name"]


def load_shipped(name: str):
    """The shipped pipeline `name` on the CPU in fp32, offline."""
    import torch
    from diffusers import AutoencoderKL

    from thermosynth.pipelines import PIPELINE_CLASSES, TextToThermalPipeline, _from_pretrained

    if not is_shipped(name):
        raise ValueError(f"{name!r} is not a shipped model; shipped: {', '.join(SHIPPED)}")
    folder = ROOT / name
    if not is_installed(name):
        raise FileNotFoundError(f"{folder}: the shipped model's files are missing; reinstall thermosynth.")
    class_name = shipped_class_name(name)
    shared = {}
    if class_name == TextToThermalPipeline.__name__:
        from thermosynth.models.text_encoders import DEFAULT_TEXT_ENCODER, load_text_encoder

        shared["tokenizer"], shared["text_encoder"] = load_text_encoder(DEFAULT_TEXT_ENCODER)
        cls = TextToThermalPipeline
    else:
        cls = PIPELINE_CLASSES[class_name]
    # Stored in fp16, read in fp32 (CPU arithmetic); `torch_dtype` is the name every supported diffusers takes.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch_dtype.*deprecated", category=FutureWarning)
        shared["vae"] = AutoencoderKL.from_pretrained(ROOT / "autoencoder", torch_dtype=torch.float32)
        return _from_pretrained(cls, str(folder), torch_dtype=torch.float32, **shared)
