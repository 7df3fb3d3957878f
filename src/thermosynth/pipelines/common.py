"""What every thermosynth pipeline does the same way: accept visible images, pad them, convert thermal outputs."""

from __future__ import annotations

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from diffusers.image_processor import VaeImageProcessor

from thermosynth.data.normalization import ThermalNormalization
from thermosynth.models.latent_codec import LatentCodec

OUTPUT_TYPES = ("pil", "pil16", "np", "pt")
VISIBLE_PROCESSOR = VaeImageProcessor(do_resize=False, do_convert_rgb=True)
THERMAL_PROCESSOR = VaeImageProcessor(do_resize=False)  # 1-channel tensors become "L" images


class ThermalOutputMixin:
    """For pipelines whose config records the thermal normalisation their outputs are in."""

    @property
    def normalization(self) -> ThermalNormalization:
        return ThermalNormalization.from_dict(self.config.thermal_normalization)


class LatentDiffusionMixin:
    """For pipelines that denoise in the latent space of their `vae` with a `unet`."""

    @property
    def codec(self) -> LatentCodec:
        return LatentCodec(self.vae)

    @property
    def size_multiple(self) -> int:
        """Image sides must be multiples of this: the autoencoder's downsampling times the UNet's."""
        return self.codec.size_multiple(self.unet)


DEFAULT_INFERENCE_STEPS = 25


def sampling_settings(pipeline, num_inference_steps: int | None, guidance_scale: float | None) -> tuple[int, float]:
    """Steps and guidance for a call: as given, else as recorded with the model (its config's `sampling`, chosen on
    validation data when it was made), else the defaults (25 steps, the pipeline's `default_guidance_scale`)."""
    recorded = getattr(pipeline.config, "sampling", None) or {}
    if num_inference_steps is None:
        num_inference_steps = recorded.get("num_inference_steps", DEFAULT_INFERENCE_STEPS)
    if guidance_scale is None:
        guidance_scale = recorded.get("guidance_scale", pipeline.default_guidance_scale)
    return int(num_inference_steps), float(guidance_scale)


def check_output_type(output_type: str) -> None:
    if output_type not in OUTPUT_TYPES:
        raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")


def visible_batch(image) -> torch.Tensor:
    """PIL image(s), (H, W, 3) uint8 array(s) or a (B, 3, H, W) tensor in [-1, 1] -> (B, 3, H, W) tensor."""
    if isinstance(image, torch.Tensor):
        batch = image[None] if image.ndim == 3 else image
        if batch.ndim != 4 or batch.shape[1] != 3:
            raise ValueError(f"a visible tensor must be (B, 3, H, W) in [-1, 1], got shape {tuple(image.shape)}")
        return batch.float()
    images = image if isinstance(image, list) else [image]
    if not images:
        raise ValueError("no images given")
    pictures = []
    for item in images:
        if isinstance(item, np.ndarray) and item.dtype == np.uint8 and item.ndim == 3 and item.shape[2] == 3:
            item = PIL.Image.fromarray(item)
        if not isinstance(item, PIL.Image.Image):
            raise ValueError("visible images must be PIL images or (H, W, 3) uint8 arrays")
        pictures.append(item)
    if len({p.size for p in pictures}) > 1:
        raise ValueError("all images of one call must have the same size; call once per size")
    return VISIBLE_PROCESSOR.preprocess(pictures)  # RGB, [0, 255] -> [-1, 1]; no resizing (pipelines pad instead)


def pad_to_multiple(images: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad (B, C, H, W) at the bottom and right up to a multiple of `multiple` (reflection needs pad < size;
    replicate beyond that). Crop results back with [..., :H, :W]."""
    height, width = images.shape[-2:]
    pad_h, pad_w = -height % multiple, -width % multiple
    if not (pad_h or pad_w):
        return images
    mode = "reflect" if pad_h < height and pad_w < width else "replicate"
    return F.pad(images, (0, pad_w, 0, pad_h), mode=mode)


def postprocess(thermal: torch.Tensor, output_type: str, normalization: ThermalNormalization):
    """(B, 1, H, W) in [-1, 1] -> "pt" as is, "np" (B, H, W, 1) in [0, 1], "pil" 8-bit or "pil16" 16-bit images
    (raw units of a 16-bit model, else the 8-bit range stretched to 0..65535)."""
    if output_type == "pt":
        return thermal
    if output_type in ("np", "pil"):
        return THERMAL_PROCESSOR.postprocess(thermal, output_type=output_type)
    x = thermal[:, 0].numpy()  # 16 bits: VaeImageProcessor writes 8-bit images only
    if normalization.bit_depth == 16:
        return [PIL.Image.fromarray(normalization.denormalize(i)) for i in x]
    return [PIL.Image.fromarray(np.rint((i + 1) * 32767.5).clip(0, 65535).astype(np.uint16)) for i in x]
