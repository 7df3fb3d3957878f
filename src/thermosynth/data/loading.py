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


def fit_normalization(thermal: list[np.ndarray], mode: str, thermal_range) -> ThermalNormalization:
    low, high = thermal_range if thermal_range is not None else (None, None)
    normalization = ThermalNormalization.fit(thermal, mode=mode, low=low, high=high)
    logger.info("thermal normalisation: %s", normalization.to_dict())
    return normalization
