"""Distribution metrics: Fréchet distance and kernel distance (KID) between sets of images.

Both are torchmetrics' implementations (float64 running sums for the Fréchet distance, unbiased polynomial-kernel
MMD over subsets for KID) run on a feature extractor given here; by default the offline EfficientNet-Lite0, whose
results are named ``fd_efficientnet-lite0`` / ``kid_efficientnet-lite0``, never FID.
"""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from thermosynth.evaluation.features import EfficientNetLite0Features


class PrecomputedFeatures(nn.Module):
    """Passes already-extracted features to torchmetrics' FID/KID: one extraction serves both metrics and a
    cache of real-image features."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def _extractor(extractor: nn.Module | None) -> nn.Module:
    return extractor if extractor is not None else EfficientNetLite0Features()


def frechet_distance_metric(extractor: nn.Module | None = None) -> FrechetInceptionDistance:
    """A Fréchet distance metric on `extractor` features. `update(images, real=...)` takes (N, C, H, W) in [-1, 1]."""
    return FrechetInceptionDistance(feature=_extractor(extractor), reset_real_features=False)


def kernel_distance_metric(extractor: nn.Module | None = None, subset_size: int = 100,
                           subsets: int = 100) -> KernelInceptionDistance:
    """KID on `extractor` features: mean and std over `subsets` random subsets of `subset_size` images."""
    return KernelInceptionDistance(feature=_extractor(extractor), subset_size=subset_size, subsets=subsets,
                                   reset_real_features=False)


def metric_name(kind: str, extractor: nn.Module) -> str:
    return f"{kind}_{getattr(extractor, 'name', type(extractor).__name__)}"


def frechet_distance(real: torch.Tensor, generated: torch.Tensor, extractor: nn.Module | None = None,
                     batch_size: int = 32) -> float:
    """Function form: the Fréchet distance between two image sets (N, C, H, W) in [-1, 1]."""
    metric = frechet_distance_metric(extractor)
    for images, is_real in ((real, True), (generated, False)):
        if len(images) < 2:
            raise ValueError("a Fréchet distance needs at least 2 images in each set")
        for start in range(0, len(images), batch_size):
            metric.update(images[start : start + batch_size], real=is_real)
    return float(metric.compute())
