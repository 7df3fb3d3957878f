"""The one place where raw thermal values become model values in [-1, 1] and back.

Three ways to choose the raw range that maps to [-1, 1]:

- ``fixed``: a range given by the user, by default the full range of the bit depth (0..255 or 0..65535). Exact and
  reversible; the right choice for 8-bit data and for radiometric data with a known temperature span.
- ``dataset``: low/high percentiles of all training pixels, computed once by `fit`. Reversible like ``fixed``.
- ``percentile``: low/high percentiles of each image (contrast stretch per frame, as many thermal viewers do).
  Absolute temperature is lost on the way in, so outputs are mapped back to the *mean* per-image range seen in
  training: a typical frame, not a measured one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np

from thermosynth.data.errors import DataError

MODES = ("fixed", "dataset", "percentile")


@dataclass(frozen=True)
class ThermalNormalization:
    mode: str = "fixed"
    bit_depth: int = 8
    low: float = 0.0  # raw value mapped to -1 (for "percentile": the mean per-image low seen in training)
    high: float = 255.0  # raw value mapped to +1
    percentiles: tuple[float, float] = (1.0, 99.0)

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"thermal normalisation mode {self.mode!r} is unknown; choose one of {MODES}")
        if self.bit_depth not in (8, 16):
            raise ValueError(f"bit_depth must be 8 or 16, got {self.bit_depth}")
        if not self.high > self.low:
            raise ValueError(f"thermal range needs high > low, got low={self.low}, high={self.high}")
        p_low, p_high = self.percentiles
        if not 0.0 <= p_low < p_high <= 100.0:
            raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {self.percentiles}")
        object.__setattr__(self, "percentiles", (float(p_low), float(p_high)))

    @property
    def max_value(self) -> int:
        return 255 if self.bit_depth == 8 else 65535

    def range_of(self, raw: np.ndarray) -> tuple[float, float]:
        """The raw values that map to -1 and +1 for this image."""
        if self.mode != "percentile":
            return self.low, self.high
        low, high = np.percentile(raw, self.percentiles)
        return float(low), float(max(high, low + 1.0))  # a flat image still gets a valid range

    def normalize(self, raw: np.ndarray, value_range: tuple[float, float] | None = None) -> np.ndarray:
        """Raw values to float32 in [-1, 1]; values outside the range are clipped.

        `value_range` is `range_of(whole image)`: pass it when normalising a crop, so a per-image percentile range
        comes from the whole frame rather than the crop.
        """
        self.check_dtype(raw)
        low, high = value_range if value_range is not None else self.range_of(raw)
        x = (raw.astype(np.float64) - low) / (high - low) * 2.0 - 1.0
        return np.clip(x, -1.0, 1.0).astype(np.float32)

    def denormalize(self, x: np.ndarray) -> np.ndarray:
        """Model values in [-1, 1] back to raw values (uint8 or uint16)."""
        raw = (np.clip(np.asarray(x, dtype=np.float64), -1.0, 1.0) + 1.0) / 2.0 * (self.high - self.low) + self.low
        dtype = np.uint8 if self.bit_depth == 8 else np.uint16
        return np.clip(np.rint(raw), 0, self.max_value).astype(dtype)

    def check_dtype(self, raw: np.ndarray, name: str = "thermal image") -> None:
        expected = np.uint8 if self.bit_depth == 8 else np.uint16
        if raw.dtype != expected:
            raise DataError(
                f"{name} is {raw.dtype} but the normalisation expects {self.bit_depth}-bit data. "
                "Use images of one bit depth throughout (convert them, or train a model for this depth)."
            )

    @classmethod
    def fit(
        cls,
        raws: Iterable[np.ndarray],
        mode: str = "fixed",
        low: float | None = None,
        high: float | None = None,
        percentiles: tuple[float, float] = (1.0, 99.0),
    ) -> ThermalNormalization:
        """The normalisation for a training set: its bit depth and, for ``dataset``/``percentile``, its range."""
        raws = list(raws)
        if not raws:
            raise DataError("no thermal images to fit the normalisation on")
        depths = {8 if r.dtype == np.uint8 else 16 for r in raws}
        if len(depths) > 1:
            raise DataError(
                "the training set mixes 8-bit and 16-bit thermal images; convert them to one bit depth first"
            )
        bit_depth = depths.pop()
        full = 255.0 if bit_depth == 8 else 65535.0
        if mode == "fixed":
            return cls("fixed", bit_depth, 0.0 if low is None else low, full if high is None else high, percentiles)
        if low is not None or high is not None:
            raise ValueError(f"low/high are only given for mode 'fixed'; mode {mode!r} computes them")
        if mode == "dataset":
            # A strided subsample keeps memory flat on big sets; percentiles of ~1M pixels are stable.
            stride = max(1, sum(r.size for r in raws) // 1_000_000)
            pooled = np.concatenate([r.ravel()[::stride] for r in raws])
            lo, hi = np.percentile(pooled, percentiles)
            return cls("dataset", bit_depth, float(lo), float(max(hi, lo + 1.0)), percentiles)
        if mode == "percentile":
            probe = cls("percentile", bit_depth, 0.0, full, percentiles)
            ranges = np.array([probe.range_of(r) for r in raws])
            return cls("percentile", bit_depth, float(ranges[:, 0].mean()), float(ranges[:, 1].mean()), percentiles)
        raise ValueError(f"thermal normalisation mode {mode!r} is unknown; choose one of {MODES}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["percentiles"] = list(self.percentiles)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ThermalNormalization:
        d = dict(d)
        d["percentiles"] = tuple(d.get("percentiles", (1.0, 99.0)))
        return cls(**d)
