"""From config to decoded arrays: the glue that training and evaluation share."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from thermosynth.data.datasets import limit_size
from thermosynth.data.normalization import ThermalNormalization
from thermosynth.data.sources import decode_pairs, decode_thermal, is_thermal_only, load_pairs, load_thermal_images

logger = logging.getLogger(__name__)


def load_paired_arrays(
    paths: list[str], split: str | None, skip_bad: bool, max_side: int | None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Decoded (visible, thermal) pairs from every paired source in `paths`."""
    pairs = []
    for path in paths:
        records = load_pairs(path, split, skip_bad)
        decoded = decode_pairs(records, skip_bad)
        logger.info("%s: %d pairs", path, len(decoded))
        pairs += [(limit_size(v, max_side), limit_size(t, max_side)) for _, v, t in decoded]
    return pairs


def load_autoencoder_arrays(
    paths: list[str], split: str | None, skip_bad: bool, max_side: int | None
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """All thermal images, and all visible images of paired sources, in `paths` (thermal, visible)."""
    thermal, visible = [], []
    for path in paths:
        if is_thermal_only(Path(path)):
            decoded = decode_thermal(load_thermal_images(path, split, skip_bad), skip_bad)
            thermal += [limit_size(t, max_side) for _, t in decoded]
            logger.info("%s: %d thermal images", path, len(decoded))
        else:
            pairs = load_paired_arrays([path], split, skip_bad, max_side)
            visible += [v for v, _ in pairs]
            thermal += [t for _, t in pairs]
    return thermal, visible


# Warn when the normalised training data clips more than this share of pixels at -1 or +1, or spans less than this
# share of [-1, 1] (16-bit radiometric data mapped over the full 0..65535 uses a sliver of it).
MAX_CLIPPED, MIN_SPAN = 0.5, 0.1


def range_usage(thermal: list[np.ndarray], normalization: ThermalNormalization) -> dict[str, float]:
    """Share of pixels clipped at either end, and the share of [-1, 1] between the 1st and 99th percentiles."""
    values = np.concatenate([normalization.normalize(raw, normalization.range_of(raw)).ravel()[::7]
                             for raw in thermal])  # every 7th pixel: enough for fractions, light on memory
    low, high = np.percentile(values, [1, 99])
    return {"clipped": float(np.mean((values <= -1) | (values >= 1))), "span": float(high - low) / 2}


def fit_normalization(thermal: list[np.ndarray], mode: str, thermal_range) -> ThermalNormalization:
    low, high = thermal_range if thermal_range is not None else (None, None)
    normalization = ThermalNormalization.fit(thermal, mode=mode, low=low, high=high)
    logger.info("thermal normalisation: %s", normalization.to_dict())
    usage = range_usage(thermal, normalization)
    if usage["clipped"] > MAX_CLIPPED or usage["span"] < MIN_SPAN:
        logger.warning(
            "thermal normalisation %s fits the data poorly: %.0f%% of pixels clip at its ends, and 98%% of values "
            "span %.1f%% of the model's range. Give --thermal-range LOW HIGH around the data's raw values, or "
            "--thermal-normalization dataset.", normalization.to_dict(), 100 * usage["clipped"], 100 * usage["span"])
    return normalization
