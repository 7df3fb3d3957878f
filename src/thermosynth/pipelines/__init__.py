"""Diffusers pipelines: LaPIG's visible-to-thermal LDM, the pix2pix baseline (both loadable by `load_pipeline`),
TxT2IR's text-to-thermal LDM, and LaPIG's identity-conditioned faces with their thermal pairs."""

from __future__ import annotations

import json
import logging
import re
from contextlib import contextmanager
from pathlib import Path

from thermosynth.pipelines.faces import IdentityFacePipeline, PairedFacePipeline
from thermosynth.pipelines.pix2pix import Pix2PixPipeline
from thermosynth.pipelines.text_to_thermal import TextToThermalPipeline
from thermosynth.pipelines.visible_to_thermal import VisibleToThermalPipeline, set_scheduler

logger = logging.getLogger(__name__)

PIPELINE_CLASSES = {cls.__name__: cls for cls in (VisibleToThermalPipeline, Pix2PixPipeline)}

__all__ = ["PIPELINE_CLASSES", "IdentityFacePipeline", "PairedFacePipeline", "Pix2PixPipeline",
           "TextToThermalPipeline", "VisibleToThermalPipeline", "load_face_pipeline", "load_pipeline",
           "load_text_pipeline", "prepare_for_inference"]


HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def _saved_class_name(model: str) -> str:
    """The class a saved pipeline's model_index.json names (a hub repository's is downloaded only when named)."""
    from thermosynth.pretrained import SHIPPED

    path = Path(model)
    if (path / "model_index.json").is_file():
        return json.loads((path / "model_index.json").read_text())["_class_name"]
    if path.exists():
        raise ValueError(f"{model}: not a thermosynth pipeline folder (no model_index.json). Give the 'pipeline' "
                         "folder of a `thermosynth train` run.")
    if not HUB_ID.fullmatch(model):
        raise ValueError(f"{model}: no such folder. Give a pipeline folder (<run>/pipeline), a shipped model "
                         f"({', '.join(SHIPPED)}) or a hub id (owner/name).")
    from huggingface_hub import hf_hub_download

    try:
        return json.loads(Path(hf_hub_download(model, "model_index.json")).read_text())["_class_name"]
    except OSError as error:  # offline and not cached, unreachable, or no such repository: one line, not 60
        raise ValueError(
            f"{model}: no such folder here, and the hub id could not be read ({type(error).__name__}: it is not in "
            "the local Hugging Face cache and the hub cannot be reached, or the repository does not exist). "
            "Download it where there is a network, or give a local folder or a shipped model "
            f"({', '.join(SHIPPED)})."
        ) from None


@contextmanager
def _onnx_hidden_from_diffusers():
    """diffusers' loader imports onnxruntime whenever it is installed, to recognise ONNX components (thermosynth's
    pipelines have none); onnxruntime, installed for the ONNX face embedder, then starts its telemetry. While our
    pipelines load, diffusers is told onnxruntime is absent (diffusers.utils.import_utils._onnx_available)."""
    from diffusers.utils import import_utils

    available = getattr(import_utils, "_onnx_available", None)
    if available is not None:
        import_utils._onnx_available = False
    try:
        yield
    finally:
        if available is not None:
            import_utils._onnx_available = available


def _from_pretrained(cls, model: str, **components):
    """cls.from_pretrained without importing onnxruntime, with an unreadable weights file reported in one line with
    the way to replace it."""
    try:
        with _onnx_hidden_from_diffusers():
            return cls.from_pretrained(model, **components)
    except OSError as error:
        raise ValueError(
            f"{model}: {str(error).splitlines()[0]} The file is probably truncated or corrupted: copy it again, or "
            f"delete {model} and re-run the `thermosynth train` command that made it (a finished run exports its "
            "model again from the last checkpoint)."
        ) from None


def load_pipeline(model: str):
    """The translation pipeline (V2T or pix2pix) shipped under a name (`v2t-roadscene`), or saved in a folder or hub
    repository, by the class its model_index.json names."""
    from thermosynth.pretrained import is_shipped, load_shipped, shipped_class_name

    if is_shipped(model):
        if shipped_class_name(model) not in PIPELINE_CLASSES:
            raise ValueError(f"{model} is a shipped text-to-thermal model, not a translation pipeline: use it with "
                             "`thermosynth generate` or load_text_pipeline.")
        return load_shipped(model)
    class_name = _saved_class_name(model)
    if class_name not in PIPELINE_CLASSES:
        raise ValueError(f"{model}: its model_index.json names {class_name!r}, not a thermosynth translation pipeline "
                         f"({', '.join(PIPELINE_CLASSES)})")
    return _from_pretrained(PIPELINE_CLASSES[class_name], model)


def load_text_pipeline(model: str) -> TextToThermalPipeline:
    """The text-to-thermal pipeline shipped under a name (`t2ir-hituav`), or saved in a folder or hub repository (a
    `thermosynth train t2ir` run's 'pipeline' folder)."""
    from thermosynth.pretrained import is_shipped, load_shipped, shipped_class_name

    if is_shipped(model):
        if shipped_class_name(model) != TextToThermalPipeline.__name__:
            raise ValueError(f"{model} is a shipped translation model, not a text-to-thermal pipeline: use it with "
                             "`thermosynth translate` or load_pipeline.")
        return load_shipped(model)
    class_name = _saved_class_name(model)
    if class_name != TextToThermalPipeline.__name__:
        raise ValueError(f"{model}: its model_index.json names {class_name!r}, not a text-to-thermal pipeline; give "
                         "the 'pipeline' folder of a `thermosynth train t2ir` run.")
    return _from_pretrained(TextToThermalPipeline, model)


def load_face_pipeline(model: str) -> IdentityFacePipeline:
    """The identity-conditioned face generator saved in a folder or hub repository (a `thermosynth train faces` run's
    'pipeline' folder)."""
    class_name = _saved_class_name(model)
    if class_name != IdentityFacePipeline.__name__:
        raise ValueError(f"{model}: its model_index.json names {class_name!r}, not a face generator; give the "
                         "'pipeline' folder of a `thermosynth train faces` run.")
    return _from_pretrained(IdentityFacePipeline, model)


INFERENCE_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}  # --dtype name -> torch dtype


def prepare_for_inference(pipeline, device: str | None = None, scheduler: str = "ddim", dtype: str | None = None):
    """Ready a loaded pipeline for the commands: on `device` (default: this process's GPU when there is one, so
    each process of `accelerate launch` uses its own) in `dtype` (fp32, bf16 or fp16; default fp32 on the CPU and
    bf16 on CUDA), with the `scheduler` sampler where it samples (pix2pix does not), and without per-step progress
    bars (the commands show their own). Logs the device and precision used."""
    import torch

    from thermosynth.distributed import process_device

    if dtype is not None and dtype not in INFERENCE_DTYPES:
        raise ValueError(f"dtype must be one of {tuple(INFERENCE_DTYPES)}, got {dtype!r}")
    device = process_device(device)
    dtype = dtype or ("bf16" if device.startswith("cuda") else "fp32")
    pipeline.to(device)
    target = getattr(torch, INFERENCE_DTYPES[dtype])
    modules = [m for m in pipeline.components.values() if isinstance(m, torch.nn.Module)]
    if any(p.dtype != target for m in modules for p in m.parameters()):  # a no-op cast still warns in diffusers
        pipeline.to(dtype=target)
    logger.info("inference on %s in %s", device, dtype)
    if "scheduler" in pipeline.components:
        set_scheduler(pipeline, scheduler)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline
