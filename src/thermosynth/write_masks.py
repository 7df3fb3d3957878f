"""`thermosynth masks`: the hot-region masks that the thermal-mask loss uses, written as PNG for inspection.

For each thermal image: ``OUT/<stem>.png`` (the mask: 255 hot, 0 not) and ``OUT/overlay/<stem>.png`` (the image in
grey with its hot pixels tinted red). Masks are computed exactly as training computes them (data/masks.py), at the
image's own size. Existing outputs are skipped, so an interrupted run resumes (with the same settings alone:
``OUT/masks.json``, resumable.py).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from thermosynth.data.errors import DataError
from thermosynth.data.images import atomic_write, list_images, read_thermal
from thermosynth.data.masks import COLD_WEIGHT, HOT_WEIGHT, HotMaskSpec, hot_mask
from thermosynth.data.sources import ThermalRecord, hituav_frames
from thermosynth.render import stretch_to_uint8
from thermosynth.resumable import check_settings, write_settings

logger = logging.getLogger(__name__)


def _records(inputs: list[str], split: str | None) -> list[ThermalRecord]:
    records: list[ThermalRecord] = []
    for item in map(Path, inputs):
        if (item / "JPEGImages").is_dir():
            records += hituav_frames(item, split)
        elif item.is_dir():
            found = list_images(item)
            if not found:
                raise DataError(f"{item}: folder holds no images (png, jpg, tif, bmp).")
            records += [ThermalRecord(p) for p in found]
        elif item.is_file():
            records.append(ThermalRecord(item))
        else:
            raise DataError(f"{item}: no such file or folder.")
    return records


def overlay(thermal: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(H, W) thermal + bool mask -> (H, W, 3) uint8: grey image, hot pixels tinted red."""
    rgb = np.repeat(stretch_to_uint8(thermal)[..., None].astype(np.float64), 3, axis=2)
    rgb[mask] = 0.4 * rgb[mask] + 0.6 * np.array([255.0, 0.0, 0.0])
    return rgb.round().astype(np.uint8)


def write_masks(inputs: list[str], out: Path, method: str = HotMaskSpec.method,
                percentile: float = HotMaskSpec.percentile, in_boxes: bool = False,
                split: str | None = None) -> dict[str, int]:
    spec = HotMaskSpec(method, percentile)
    records = _records(inputs, split)
    record, settings = out / "masks.json", {"method": method, "in_boxes": in_boxes}
    if method == "percentile":
        settings["percentile"] = percentile
    check_settings(record, settings, "masks")  # existing masks are skipped: they must be made the same way
    counts = {"written": 0, "skipped_existing": 0}
    for item in tqdm(records, desc="masks", unit="img"):
        target, shown = out / f"{item.path.stem}.png", out / "overlay" / f"{item.path.stem}.png"
        if target.is_file() and shown.is_file():
            counts["skipped_existing"] += 1
            continue
        thermal = read_thermal(item.path)
        mask = hot_mask(thermal, spec, item.boxes if in_boxes else ())
        write_settings(record, settings)
        atomic_write(target, lambda tmp, m=mask: Image.fromarray(m.astype(np.uint8) * 255).save(tmp, format="PNG"))
        atomic_write(shown, lambda tmp, t=thermal, m=mask: Image.fromarray(overlay(t, m)).save(tmp, format="PNG"))
        counts["written"] += 1
    (out / "README.txt").write_text(
        f"Hot-region masks ({method}{f', percentile {percentile}' if method == 'percentile' else ''}, "
        f"{'inside boxes only' if in_boxes else 'whole image'}). The thermal-mask loss weighs hot pixels "
        f"{HOT_WEIGHT} and the rest {COLD_WEIGHT} (T2IRTrainConfig's hot_weight and cold_weight, by default).\n"
    )
    return counts
