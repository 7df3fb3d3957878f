"""Distribution metrics: Fréchet distance and kernel distance (KID) between sets of images.

Both are torchmetrics' implementations (float64 running sums for the Fréchet distance, unbiased polynomial-kernel
MMD over subsets for KID) run on a feature extractor given here; by default the offline EfficientNet-Lite0, whose
results are named ``fd_efficientnet-lite0`` / ``kid_efficientnet-lite0``, never FID.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from thermosynth.distributed import SCORED_ALONE
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
    """A Fréchet distance metric on `extractor` features. `update(images, real=...)` takes (N, C, H, W) in [-1, 1].
    Like every metric here it is computed by one process over all the data (SCORED_ALONE)."""
    return FrechetInceptionDistance(feature=_extractor(extractor), reset_real_features=False, **SCORED_ALONE)


KID_SUBSETS = 100


def kernel_distance_metric(extractor: nn.Module | None = None, subset_size: int = 100,
                           subsets: int = KID_SUBSETS) -> KernelInceptionDistance:
    """KID on `extractor` features: mean and std over `subsets` random subsets of `subset_size` images."""
    with warnings.catch_warnings():  # torchmetrics' notice that features are kept in memory: nothing to act on
        warnings.filterwarnings("ignore", message=".*will save all extracted features in buffer")
        return KernelInceptionDistance(feature=_extractor(extractor), subset_size=subset_size, subsets=subsets,
                                       reset_real_features=False, **SCORED_ALONE)


def kid_subset_size(smallest_set: int, cap: int) -> int:
    """KID's subset size for sets of at least `smallest_set` images: half of them (so that the random subsets differ
    and their std means something), at least 2 (a kernel estimate needs pairs), at most `cap`."""
    if smallest_set < 2:
        raise ValueError(f"KID needs at least 2 images in each set, got {smallest_set}")
    return max(2, min(cap, smallest_set // 2))


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


def feature_distances(real: torch.Tensor, generated: torch.Tensor, extractor: nn.Module, kid_subset_size: int,
                      kid_seed: int = 0) -> dict[str, float]:
    """Fréchet distance and KID (mean, std) between two sets of (N, D) features already taken by `extractor`,
    named after it. KID draws its subsets from the global RNG: a fixed seed makes results repeat."""
    fd = frechet_distance_metric(PrecomputedFeatures(extractor.num_features))
    kid = kernel_distance_metric(PrecomputedFeatures(extractor.num_features), subset_size=kid_subset_size)
    for metric in (fd, kid):
        metric.update(real, real=True)
        metric.update(generated, real=False)
    with torch.random.fork_rng():
        torch.manual_seed(kid_seed)
        kid_mean, kid_std = kid.compute()
    return {metric_name("fd", extractor): float(fd.compute()), metric_name("kid", extractor): float(kid_mean),
            metric_name("kid", extractor) + "_std": float(kid_std)}
