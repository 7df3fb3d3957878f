"""Paired translation metrics on single-channel thermal images, 0..255 scale.

SSIM: Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03 (Wang et al. 2004), via torchmetrics; PSNR and MAE on
0..255 values. These are the settings of the quality calibration table in DESIGN.md.
"""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure


def paired_metrics(generated: np.ndarray, real: np.ndarray) -> dict[str, float]:
    """SSIM, PSNR (dB) and MAE between two (H, W) uint8 thermal images of the same size."""
    if generated.shape != real.shape or generated.ndim != 2:
        raise ValueError(f"need two (H, W) images of one size, got {generated.shape} and {real.shape}")
    a = torch.from_numpy(generated.astype(np.float64))[None, None]
    b = torch.from_numpy(real.astype(np.float64))[None, None]
    return {
        "ssim": float(structural_similarity_index_measure(a, b, data_range=255.0, gaussian_kernel=True, sigma=1.5)),
        "psnr": float(peak_signal_noise_ratio(a, b, data_range=255.0)),
        "mae": float((a - b).abs().mean()),
    }
