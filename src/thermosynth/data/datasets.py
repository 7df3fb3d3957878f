"""In-memory image sets that hand out randomly cropped batches.

Images stay decoded in memory in their raw dtype (uint8 / uint16); conversion to [-1, 1] happens per crop. Batches
are drawn from a caller's `torch.Generator` rather than a DataLoader, so that a training step's data is a pure
function of (seed, rank, step) and a resumed run replays exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.image_processor import VaeImageProcessor

from thermosynth.data.augment import CropSpec, apply_crop, sample_crop_box
from thermosynth.data.normalization import ThermalNormalization
from thermosynth.models.latent_codec import as_codec_input


def visible_to_tensor(visible: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float in [-1, 1], by the same float steps as diffusers' VaeImageProcessor (which
    the pipelines use), so that training and inference see identical inputs."""
    return VaeImageProcessor.normalize(torch.from_numpy(visible.astype(np.float32) / 255.0).permute(2, 0, 1))


def limit_size(image: np.ndarray, long_side: int | None) -> np.ndarray:
    """Downscale so the longer side is at most `long_side` (None keeps the native size)."""
    height, width = image.shape[:2]
    if long_side is None or max(height, width) <= long_side:
        return image
    factor = long_side / max(height, width)
    size = (max(8, round(height * factor)), max(8, round(width * factor)))
    t = torch.from_numpy(image.astype(np.float32))
    t = t[None, None] if t.ndim == 2 else t.permute(2, 0, 1)[None]
    t = F.interpolate(t, size=size, mode="bilinear", antialias=True, align_corners=False)[0]
    t = t[0] if image.ndim == 2 else t.permute(1, 2, 0)
    return t.round().clamp(0, np.iinfo(image.dtype).max).numpy().astype(image.dtype)


@dataclass
class ThermalImage:
    raw: np.ndarray  # (H, W) uint8 or uint16
    value_range: tuple[float, float]

    def tensor(self, normalization: ThermalNormalization) -> torch.Tensor:
        return torch.from_numpy(normalization.normalize(self.raw, self.value_range))[None]  # (1, H, W)


class PairedImages:
    """Pixel-aligned visible/thermal pairs."""

    def __init__(self, pairs: list[tuple[np.ndarray, np.ndarray]], normalization: ThermalNormalization):
        self.normalization = normalization
        self.visible = [v for v, _ in pairs]
        self.thermal = [ThermalImage(t, normalization.range_of(t)) for _, t in pairs]

    def __len__(self) -> int:
        return len(self.visible)

    def pair(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole pair: visible (3, H, W) and thermal (1, H, W) in [-1, 1]."""
        return visible_to_tensor(self.visible[index]), self.thermal[index].tensor(self.normalization)

    def sample(self, batch_size: int, crop: CropSpec, generator: torch.Generator) -> dict[str, torch.Tensor]:
        visible, thermal = [], []
        for index in torch.randint(len(self), (batch_size,), generator=generator).tolist():
            v, t = self.pair(index)
            box = sample_crop_box(v.shape[1], v.shape[2], crop, generator)
            visible.append(apply_crop(v, box, crop.size))
            thermal.append(apply_crop(t, box, crop.size))
        return {"visible": torch.stack(visible), "thermal": torch.stack(thermal)}  # (B, 3, S, S), (B, 1, S, S)


class AutoencoderImages:
    """Thermal and visible images for the shared autoencoder, all as 3-channel tensors.

    Each draw is thermal with probability `thermal_fraction`: the decoder's thermal reconstructions bound the
    quality of every thermal image the LDMs make, so thermal gets the larger share.
    """

    def __init__(
        self,
        thermal: list[np.ndarray],
        visible: list[np.ndarray],
        normalization: ThermalNormalization,
        thermal_fraction: float = 0.75,
    ):
        if not thermal:
            raise ValueError("the autoencoder needs thermal images")
        self.normalization = normalization
        self.thermal = [ThermalImage(t, normalization.range_of(t)) for t in thermal]
        self.visible = visible
        self.thermal_fraction = thermal_fraction if visible else 1.0

    def sample(
        self, batch_size: int, crop: CropSpec, generator: torch.Generator, thermal_fraction: float | None = None
    ) -> torch.Tensor:
        """A batch of crops (B, 3, S, S); `thermal_fraction` overrides the set's mix (1: thermal only, 0: visible)."""
        fraction = self.thermal_fraction if thermal_fraction is None else thermal_fraction
        if fraction < 1.0 and not self.visible:
            raise ValueError("this image set has no visible images")
        images = []
        for _ in range(batch_size):
            u = torch.rand(2, generator=generator).tolist()
            if u[0] < fraction:
                image = as_codec_input(self.thermal[int(u[1] * len(self.thermal))].tensor(self.normalization))
            else:
                image = visible_to_tensor(self.visible[int(u[1] * len(self.visible))])
            box = sample_crop_box(image.shape[1], image.shape[2], crop, generator)
            images.append(apply_crop(image, box, crop.size))
        return torch.stack(images)  # (B, 3, S, S)
