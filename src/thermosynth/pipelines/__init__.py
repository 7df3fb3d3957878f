"""Diffusers pipelines: LaPIG's visible-to-thermal LDM, the pix2pix baseline (both loadable by `load_pipeline`), and
TxT2IR's text-to-thermal LDM."""

from __future__ import annotations

import json
from pathlib import Path

from thermosynth.pipelines.pix2pix import Pix2PixPipeline
from thermosynth.pipelines.text_to_thermal import TextToThermalPipeline
from thermosynth.pipelines.visible_to_thermal import VisibleToThermalPipeline

PIPELINE_CLASSES = {cls.__name__: cls for cls in (VisibleToThermalPipeline, Pix2PixPipeline)}

__all__ = ["PIPELINE_CLASSES", "Pix2PixPipeline", "TextToThermalPipeline", "VisibleToThermalPipeline", "load_pipeline"]


def load_pipeline(model: str):
    """The pipeline saved in a folder (or hub repository, downloaded only when named) by the class its
    model_index.json names."""
    index = Path(model) / "model_index.json"
    if index.is_file():
        class_name = json.loads(index.read_text())["_class_name"]
    else:
        from huggingface_hub import hf_hub_download

        class_name = json.loads(Path(hf_hub_download(model, "model_index.json")).read_text())["_class_name"]
    if class_name not in PIPELINE_CLASSES:
        raise ValueError(f"{model}: its model_index.json names {class_name!r}, not a thermosynth translation pipeline "
                         f"({', '.join(PIPELINE_CLASSES)})")
    return PIPELINE_CLASSES[class_name].from_pretrained(model)
