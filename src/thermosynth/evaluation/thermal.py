"""Thermal consistency: do generated images put heat where real ones do, with the same intensity distribution?

- `HotRegionIoU` (paired): intersection over union of the hot-region masks (`thermosynth.data.masks`) of each
  generated image and its real counterpart, averaged over pairs; two empty masks count as IoU 1.
- `IntensityHistogramDistance` (unpaired): the Wasserstein-1 (earth mover's) distance between the grey-level
  distributions of all generated and all real pixels, in grey levels of 0..255: how far, on average, intensity
  mass must move. Histograms are 256-bin float64 counts, so the result does not depend on batching.
"""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics import Metric

from thermosynth.data.masks import HotMaskSpec, hot_mask

BINS = 256


def _as_images(images: torch.Tensor) -> np.ndarray:
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"expected thermal batches (B, 1, H, W) in [-1, 1], got {tuple(images.shape)}")
    return images[:, 0].detach().double().clamp(-1, 1).cpu().numpy()


class HotRegionIoU(Metric):
    full_state_update = False
    higher_is_better = True

    def __init__(self, spec: HotMaskSpec | None = None, **kwargs):
        super().__init__(**kwargs)
        self.spec = spec or HotMaskSpec()
        for name in ("iou_sum", "generated_hot_sum", "real_hot_sum"):
            self.add_state(name, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, generated: torch.Tensor, real: torch.Tensor) -> None:
        if generated.shape != real.shape:
            raise ValueError(f"generated {tuple(generated.shape)} and real {tuple(real.shape)} differ in size")
        for g, r in zip(_as_images(generated), _as_images(real), strict=True):
            mg, mr = hot_mask(g, self.spec), hot_mask(r, self.spec)
            union = np.logical_or(mg, mr).sum()
            self.iou_sum += float(np.logical_and(mg, mr).sum() / union) if union else 1.0
            self.generated_hot_sum += float(mg.mean())
            self.real_hot_sum += float(mr.mean())
            self.count += 1

    def compute(self) -> dict[str, float]:
        if self.count == 0:
            raise ValueError("no image pairs were added; call update() first")
        n = self.count.double()
        return {"hot_iou": float(self.iou_sum / n), "hot_fraction_generated": float(self.generated_hot_sum / n),
                "hot_fraction_real": float(self.real_hot_sum / n)}


class IntensityHistogramDistance(Metric):
    full_state_update = False
    higher_is_better = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        for name in ("generated_histogram", "real_histogram"):
            self.add_state(name, default=torch.zeros(BINS, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, images: torch.Tensor, real: bool) -> None:
        grey = np.rint((_as_images(images) + 1) * 127.5).astype(np.int64)  # 0..255
        counts = torch.from_numpy(np.bincount(grey.ravel(), minlength=BINS).astype(np.float64))
        if real:
            self.real_histogram += counts
        else:
            self.generated_histogram += counts

    def compute(self) -> dict[str, float]:
        if self.generated_histogram.sum() == 0 or self.real_histogram.sum() == 0:
            raise ValueError("need both generated and real images; call update(images, real=...) for each")
        p = self.generated_histogram / self.generated_histogram.sum()
        q = self.real_histogram / self.real_histogram.sum()
        levels = torch.arange(BINS, dtype=torch.float64)
        # W1 between distributions on a line = area between their cumulative distribution functions.
        return {
            "intensity_w1": float((p.cumsum(0) - q.cumsum(0)).abs().sum()),
            "mean_intensity_generated": float((p * levels).sum()),
            "mean_intensity_real": float((q * levels).sum()),
        }


class HotRegionStatistics(Metric):
    """Unpaired hot-region statistics of a set (text-to-infrared has no pixel counterpart): the mean fraction of
    hot pixels per image and the mean grey level (0..255) inside the hot masks."""

    full_state_update = False

    def __init__(self, spec: HotMaskSpec | None = None, **kwargs):
        super().__init__(**kwargs)
        self.spec = spec or HotMaskSpec()
        for name in ("images", "hot_fraction_sum", "hot_pixels", "hot_intensity_sum"):
            self.add_state(name, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, images: torch.Tensor) -> None:
        for image in _as_images(images):
            grey = (image + 1) * 127.5
            mask = hot_mask(grey, self.spec)
            self.images += 1
            self.hot_fraction_sum += float(mask.mean())
            self.hot_pixels += float(mask.sum())
            self.hot_intensity_sum += float(grey[mask].sum())

    def compute(self) -> dict[str, float]:
        if self.images == 0:
            raise ValueError("no images were added; call update() first")
        inside = float(self.hot_intensity_sum / self.hot_pixels) if self.hot_pixels > 0 else float("nan")
        return {"hot_fraction": float(self.hot_fraction_sum / self.images), "hot_mean_intensity": inside}
