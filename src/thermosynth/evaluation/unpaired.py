"""Comparing a generated set with a real set when no image has a counterpart (text-to-infrared).

Fréchet distance and KID on EfficientNet-Lite0 features, the intensity-histogram distance, and hot-region
statistics of each set. Both sets are (N, 1, H, W) in [-1, 1]; sizes may differ between sets (the feature extractor
resizes) but the hot-region statistics are only comparable at the same size.
"""

from __future__ import annotations

import torch

from thermosynth.evaluation.distribution import feature_distances, kid_subset_size
from thermosynth.evaluation.features import EfficientNetLite0Features
from thermosynth.evaluation.thermal import HotRegionStatistics, IntensityHistogramDistance


def compare_sets(real: torch.Tensor, generated: torch.Tensor, batch_size: int = 32, kid_seed: int = 0) -> dict:
    if len(real) < 2 or len(generated) < 2:
        raise ValueError("comparing sets needs at least 2 real and 2 generated images")
    extractor = EfficientNetLite0Features()
    subset = kid_subset_size(min(len(real), len(generated)), cap=100)
    histogram = IntensityHistogramDistance()
    hot = {True: HotRegionStatistics(), False: HotRegionStatistics()}
    features = {True: [], False: []}
    for images, is_real in ((real, True), (generated, False)):
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size].float()
            features[is_real].append(extractor(batch))
            histogram.update(batch, real=is_real)
            hot[is_real].update(batch)
    distances = feature_distances(torch.cat(features[True]), torch.cat(features[False]), extractor, subset, kid_seed)
    real_hot, generated_hot = hot[True].compute(), hot[False].compute()
    return {
        **distances,
        **histogram.compute(),
        **{f"{k}_real": v for k, v in real_hot.items()}, **{f"{k}_generated": v for k, v in generated_hot.items()},
        "real_images": len(real), "generated_images": len(generated),
    }
