"""Crops, resizes and flips: random ones applied identically to every image of a pair, and fixed fits."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class CropSpec:
    """A square crop of `size` pixels taken from a region `size / scale` wide, then resized to `size`.

    scale > 1 zooms in, < 1 zooms out; (1, 1) crops at the native resolution, which keeps training and full-frame
    inference at the same pixel scale.
    """

    size: int
    min_scale: float = 1.0
    max_scale: float = 1.0
    hflip: bool = True

    def __post_init__(self):
        if self.size <= 0 or self.size % 8:
            raise ValueError(f"crop size must be a positive multiple of 8, got {self.size}")
        if not 0 < self.min_scale <= self.max_scale:
            raise ValueError(f"need 0 < min_scale <= max_scale, got {self.min_scale}, {self.max_scale}")


@dataclass(frozen=True)
class CropBox:
    top: int
    left: int
    side: int  # source region side in pixels
    flip: bool


def sample_crop_box(height: int, width: int, spec: CropSpec, generator: torch.Generator) -> CropBox:
    """Draw one crop region; all randomness comes from `generator` so a run can be replayed exactly."""
    u = torch.rand(4, generator=generator).tolist()
    scale = spec.min_scale + (spec.max_scale - spec.min_scale) * u[0]
    side = min(round(spec.size / scale), height, width)  # small images are upscaled rather than padded
    top = int(u[1] * (height - side + 1))
    left = int(u[2] * (width - side + 1))
    return CropBox(top, left, side, spec.hflip and u[3] < 0.5)


def apply_crop(image: torch.Tensor, box: CropBox, size: int) -> torch.Tensor:
    """Crop (C, H, W) float `image` to `box`, resize to (C, size, size), flip if the box says so."""
    region = image[:, box.top : box.top + box.side, box.left : box.left + box.side]
    if box.side != size:
        region = F.interpolate(region[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        region = region[0]
    return region.flip(-1) if box.flip else region


def center_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    """The central `size` x `size` window of (..., H, W) (smaller sides are kept whole)."""
    height, width = image.shape[-2:]
    top, left = max(0, (height - size) // 2), max(0, (width - size) // 2)
    return image[..., top : top + size, left : left + size]


def fit_to_size(image: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """Resize an (H, W) or (H, W, C) image to cover `size` (height, width) keeping the aspect ratio, then centre-crop.
    Returns the image and (scale_x, scale_y, offset_x, offset_y) mapping original pixel coordinates to the fitted
    image."""
    height, width = image.shape[:2]
    target_h, target_w = size
    factor = max(target_h / height, target_w / width)
    new_h, new_w = max(target_h, round(height * factor)), max(target_w, round(width * factor))
    t = torch.from_numpy(image.astype(np.float32))
    t = t[None, None] if image.ndim == 2 else t.permute(2, 0, 1)[None]
    t = F.interpolate(t, size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False)[0]
    t = t[0] if image.ndim == 2 else t.permute(1, 2, 0)
    top, left = (new_h - target_h) // 2, (new_w - target_w) // 2
    fitted = t[top : top + target_h, left : left + target_w].round().clamp(0, np.iinfo(image.dtype).max)
    return fitted.numpy().astype(image.dtype), (new_w / width, new_h / height, -left, -top)
