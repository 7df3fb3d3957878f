"""The pix2pix baseline as a diffusers pipeline, with the same call and outputs as VisibleToThermalPipeline."""

from __future__ import annotations

import torch
from diffusers import DiffusionPipeline
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput

from thermosynth.data.normalization import ThermalNormalization
from thermosynth.models.pix2pix import Pix2PixGenerator
from thermosynth.pipelines.common import (
    ThermalOutputMixin,
    check_output_type,
    pad_to_multiple,
    postprocess,
    visible_batch,
)


class Pix2PixPipeline(ThermalOutputMixin, DiffusionPipeline):
    """Translate visible images to thermal in one generator pass (no sampling: steps, guidance and generator are
    accepted for a common interface and ignored). Inputs of any size are padded by reflection to the U-Net's
    multiple and cropped back."""

    def __init__(self, generator: Pix2PixGenerator, thermal_normalization: dict | None = None):
        super().__init__()
        self.register_modules(generator=generator)
        normalization = ThermalNormalization.from_dict(thermal_normalization or ThermalNormalization().to_dict())
        self.register_to_config(thermal_normalization=normalization.to_dict())

    @torch.no_grad()
    def __call__(self, image, num_inference_steps: int | None = None, guidance_scale: float | None = None,
                 generator=None, output_type: str = "pil", return_dict: bool = True):
        check_output_type(output_type)
        visible = visible_batch(image)
        height, width = visible.shape[-2:]
        visible = pad_to_multiple(visible, self.generator.size_multiple)
        model = self.generator
        thermal = model(visible.to(self._execution_device, model.dtype)).float()[:, :, :height, :width].cpu()
        images = postprocess(thermal, output_type, self.normalization)
        return ImagePipelineOutput(images=images) if return_dict else (images,)
