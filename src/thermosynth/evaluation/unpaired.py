"""Comparing a generated set with a real set when no image has a counterpart (text-to-infrared).

Fréchet distance and KID on EfficientNet-Lite0 features, the intensity-histogram distance, and hot-region
statistics of each set. Both sets are (N, 1, H, W) in [-1, 1]; sizes may differ between sets (the feature extractor
resizes) but the hot-region statistics are only comparable at the same size.
"""

from __future__ import annotations

import torch

from thermosynth.evaluation.distribution import (
    PrecomputedFeatures,
    frechet_distance_metric,
    kernel_distance_metric,
    metric_name,
)
from thermosynth.evaluation.features import EfficientNetLite0Features
from thermosynth.evaluation.thermal import HotRegionStatistics, IntensityHistogramDistance


def compare_sets(real: torch.Tensor, generated: torch.Tensor, batch_size: int = 32, kid_seed: int = 0) -> dict:
    if len(real) < 2 or len(generated) < 2:
        raise ValueError("comparing sets needs at least 2 real and 2 generated images")
    extractor = EfficientNetLite0Features()
    subset = max(2, min(100, len(real) // 2, len(generated) // 2))  # subsets must differ for a meaningful std
    fd = frechet_distance_metric(PrecomputedFeatures(extractor.num_features))
    kid = kernel_distance_metric(PrecomputedFeatures(extractor.num_features), subset_size=subset)
    histogram = IntensityHistogramDistance()
    hot = {True: HotRegionStatistics(), False: HotRegionStatistics()}
    for images, is_real in ((real, True), (generated, False)):
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size].float()
            features = extractor(batch)
            fd.update(features, real=is_real)
            kid.update(features, real=is_real)
            histogram.update(batch, real=is_real)
            hot[is_real].update(batch)
    with torch.random.fork_rng():  # KID draws its subsets from the global RNG: fix it so results repeat
        torch.manual_seed(kid_seed)
        kid_mean, kid_std = kid.compute()
    real_hot, generated_hot = hot[True].compute(), hot[False].compute()
    return {
        metric_name("fd", extractor): float(fd.compute()),
        metric_name("kid", extractor): float(kid_mean), metric_name("kid", extractor) + "_std": float(kid_std),
        **histogram.compute(),
        **{f"{k}_real": v for k, v in real_hot.items()}, **{f"{k}_generated": v for k, v in generated_hot.items()},
        "real_images": len(real), "generated_images": len(generated),
    }
