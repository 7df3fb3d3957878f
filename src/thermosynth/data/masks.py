"""Hot-region masks of thermal images: where warm objects (people, engines, tyres) stand out.

Used by TxT2IR's thermal-mask loss and by the thermal-consistency metrics. A pixel is hot when it is above a
threshold chosen per image (a high percentile, or Otsu's threshold between the background and warm objects);
an opening then removes isolated hot pixels (sensor noise, speckle) and tiny regions are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu
from skimage.morphology import remove_small_objects

METHODS = ("percentile", "otsu")
# TxT2IR's per-pixel weights M of the thermal-mask loss (the paper's values): hot pixels, and the rest
HOT_WEIGHT, COLD_WEIGHT = 5.0, 0.5


@dataclass(frozen=True)
class HotMaskSpec:
    method: str = "otsu"
    percentile: float = 90.0  # for method "percentile": the hottest (100 - percentile)% of pixels
    opening: int = 1  # radius of the morphological opening, pixels (0: none)
    min_area: int = 4  # connected hot regions smaller than this many pixels are dropped

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"hot-mask method must be one of {METHODS}, got {self.method!r}")
        if not 0.0 < self.percentile < 100.0:
            raise ValueError(f"percentile must be in (0, 100), got {self.percentile}")
        if self.opening < 0 or self.min_area < 0:
            raise ValueError("opening and min_area must be >= 0")


def hot_mask(thermal: np.ndarray, spec: HotMaskSpec | None = None, boxes=()) -> np.ndarray:
    """(H, W) thermal image (any numeric dtype; larger = hotter) -> (H, W) bool mask of hot regions.

    With `boxes` (data.sources.Box in the image's pixel coordinates) only hot pixels inside them are kept; an image
    without boxes keeps its whole-image mask."""
    spec = spec or HotMaskSpec()
    if thermal.ndim != 2:
        raise ValueError(f"expected an (H, W) thermal image, got shape {thermal.shape}")
    values = thermal.astype(np.float64)
    if np.ptp(values) == 0:  # a flat image has no hot objects
        return np.zeros(values.shape, dtype=bool)
    if spec.method == "otsu":
        threshold = threshold_otsu(values)
    else:
        threshold = np.percentile(values, spec.percentile)
    mask = values > threshold
    if spec.opening:
        structure = ndimage.generate_binary_structure(2, 1)
        mask = ndimage.binary_opening(mask, structure=structure, iterations=spec.opening)
    if spec.min_area > 1:  # 4-connected regions of fewer than min_area pixels go
        mask = remove_small_objects(mask, max_size=spec.min_area - 1, connectivity=1)
    if boxes:
        mask &= box_mask(mask.shape, boxes)
    return mask


def box_mask(shape: tuple[int, int], boxes, scale: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    """(H, W) bool mask of the inside of `boxes` (data.sources.Box, pixel corners) scaled by (sx, sy)."""
    mask = np.zeros(shape, dtype=bool)
    sx, sy = scale
    for box in boxes:
        top, bottom = int(np.floor(box.ymin * sy)), int(np.ceil(box.ymax * sy))
        left, right = int(np.floor(box.xmin * sx)), int(np.ceil(box.xmax * sx))
        mask[max(0, top) : max(0, bottom), max(0, left) : max(0, right)] = True
    return mask


def mask_weights(hot: np.ndarray, hot_weight: float = HOT_WEIGHT, cold_weight: float = COLD_WEIGHT) -> np.ndarray:
    """TxT2IR's per-pixel weights M: `hot_weight` on hot pixels, `cold_weight` elsewhere."""
    return np.where(hot, hot_weight, cold_weight).astype(np.float32)
