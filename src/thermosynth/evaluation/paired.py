"""Paired translation metrics on the single thermal channel, on the 0..255 scale.

SSIM follows Wang et al. (2004) and is scikit-image's with ``gaussian_weights=True``: an 11-tap Gaussian window
(sigma 1.5, truncated at 3.5 sigma), K1 = 0.01, K2 = 0.03, population covariances, and the mean of the SSIM map over
the pixels whose window lies inside the image (a 5-pixel border is left out). scikit-image filters with separable
Gaussians: 0.015 s for a 322x478 pair where torchmetrics' 2-D convolution took 0.29 s in float64, and the two agree
within 1.4e-14 on the 16 RoadScene validation pairs (benchmarks/perf/RESULTS.md, "Scoring"). PSNR is the mean of
per-image PSNR (torchmetrics', capped at 148 dB for identical images); MAE the mean absolute error (torchmetrics').
"""

from __future__ import annotations

import math

import numpy as np
import torch
from skimage.metrics import structural_similarity
from torchmetrics import Metric
from torchmetrics.functional import mean_absolute_error
from torchmetrics.functional.image import peak_signal_noise_ratio

SSIM_SIGMA = 1.5
SSIM_BORDER = 5  # (11 - 1) // 2: half the Gaussian window
MAX_VALUE = 255.0
PSNR_CAP = 10 * math.log10(MAX_VALUE**2 / 1e-10)  # identical images: a finite 148.1 dB that averages


def _to_255(images: torch.Tensor) -> torch.Tensor:
    return (images.detach().double().clamp(-1, 1) + 1) * (MAX_VALUE / 2)


def _check_pair(generated: torch.Tensor, real: torch.Tensor) -> None:
    if generated.shape != real.shape:
        raise ValueError(f"generated {tuple(generated.shape)} and real {tuple(real.shape)} images differ in size")
    if generated.ndim != 4 or generated.shape[1] != 1:
        raise ValueError(f"expected thermal batches (B, 1, H, W), got {tuple(generated.shape)}")
    if min(generated.shape[2:]) <= 2 * SSIM_BORDER:
        raise ValueError(f"images must be larger than {2 * SSIM_BORDER}x{2 * SSIM_BORDER} pixels for SSIM")


def ssim_per_image(generated: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """SSIM of each pair of (B, 1, H, W) float images on the 0..255 scale -> (B,) float64, on their device."""
    scores = [structural_similarity(g[0], r[0], data_range=MAX_VALUE, gaussian_weights=True, sigma=SSIM_SIGMA,
                                    use_sample_covariance=False)
              for g, r in zip(generated.double().cpu().numpy(), real.double().cpu().numpy(), strict=True)]
    return torch.tensor(scores, dtype=torch.float64, device=generated.device)


class PairedThermalMetrics(Metric):
    """SSIM, PSNR and MAE of generated against real thermal images, accumulated over batches.

    `update(generated, real)` takes (B, 1, H, W) tensors in [-1, 1] (the package convention). Sums are float64 and
    reduced by summation across processes, so the result does not depend on batch size or process count.
    """

    full_state_update = False
    higher_is_better = None

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        for name in ("ssim_sum", "psnr_sum", "mae_sum"):
            self.add_state(name, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, generated: torch.Tensor, real: torch.Tensor) -> None:
        _check_pair(generated, real)
        g, r = _to_255(generated), _to_255(real)
        self.ssim_sum += ssim_per_image(g, r).sum()
        psnr = peak_signal_noise_ratio(g, r, data_range=MAX_VALUE, reduction="none", dim=(1, 2, 3))
        self.psnr_sum += psnr.clamp(max=PSNR_CAP).sum()
        self.mae_sum += mean_absolute_error(g, r) * g.shape[0]  # images of a batch share a size: mean of means
        self.count += g.shape[0]

    def compute(self) -> dict[str, float]:
        if self.count == 0:
            raise ValueError("no image pairs were added; call update() with generated and real images first")
        n = self.count.double()
        return {"ssim": float(self.ssim_sum / n), "psnr": float(self.psnr_sum / n), "mae": float(self.mae_sum / n)}


def paired_metrics(generated: np.ndarray, real: np.ndarray) -> dict[str, float]:
    """SSIM, PSNR (dB) and MAE between two (H, W) uint8 thermal images of the same size."""
    if generated.shape != real.shape or generated.ndim != 2:
        raise ValueError(f"need two (H, W) images of one size, got {generated.shape} and {real.shape}")
    metric = PairedThermalMetrics()
    to_model_range = lambda a: torch.from_numpy(a.astype(np.float64))[None, None] / (MAX_VALUE / 2) - 1  # noqa: E731
    metric.update(to_model_range(generated), to_model_range(real))
    return metric.compute()
