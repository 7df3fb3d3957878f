"""Turning thermal arrays into pictures: false-colour palettes and image grids."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

# Ironbow: the palette of many thermal cameras, black through blue-violet, red and orange to white. Anchor colours
# chosen by eye; intermediate values are linear interpolations.
_IRONBOW_ANCHORS = np.array(
    [
        (0.00, (0, 0, 0)),
        (0.15, (32, 0, 96)),
        (0.35, (128, 0, 150)),
        (0.55, (210, 40, 60)),
        (0.75, (250, 140, 0)),
        (0.90, (255, 220, 60)),
        (1.00, (255, 255, 255)),
    ],
    dtype=object,
)
PALETTES = ("white-hot", "black-hot", "ironbow")


def _lut(palette: str) -> np.ndarray:
    levels = np.linspace(0.0, 1.0, 256)
    if palette == "white-hot":
        gray = (levels * 255).round()
        return np.stack([gray] * 3, axis=1).astype(np.uint8)
    if palette == "black-hot":
        return _lut("white-hot")[::-1].copy()
    if palette == "ironbow":
        positions = np.array([a[0] for a in _IRONBOW_ANCHORS], dtype=float)
        colours = np.array([a[1] for a in _IRONBOW_ANCHORS], dtype=float)
        return np.stack([np.interp(levels, positions, colours[:, c]) for c in range(3)], axis=1).round().astype(
            np.uint8
        )
    raise ValueError(f"unknown palette {palette!r}; choose one of {PALETTES}")


def stretch_to_uint8(thermal: np.ndarray) -> np.ndarray:
    """Any numeric image -> uint8 for display, its min..max stretched to 0..255 (a flat image gives 0s)."""
    low, high = float(thermal.min()), float(thermal.max())
    return ((thermal.astype(np.float64) - low) / max(high - low, 1.0) * 255).round().astype(np.uint8)


def colorize(thermal: np.ndarray, palette: str = "ironbow") -> np.ndarray:
    """(H, W) uint8 or uint16 thermal image -> (H, W, 3) uint8 rendering (uint16 is stretched min..max)."""
    if thermal.dtype == np.uint16:
        thermal = stretch_to_uint8(thermal)
    if thermal.dtype != np.uint8 or thermal.ndim != 2:
        raise ValueError(f"expected an (H, W) uint8/uint16 array, got {thermal.shape} {thermal.dtype}")
    return _lut(palette)[thermal]


def tensor_to_rgb(image: torch.Tensor) -> np.ndarray:
    """(C, H, W) tensor in [-1, 1], C in (1, 3) -> (H, W, 3) uint8."""
    image = image.detach().float().cpu().clamp(-1, 1)
    if image.shape[0] == 1:
        image = image.expand(3, -1, -1)
    return ((image + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()


def image_grid(rows: list[list[np.ndarray]], gap: int = 4) -> Image.Image:
    """Tile rows of (H, W, 3) uint8 images (sizes may differ) on a white background."""
    if not rows or not any(rows):
        raise ValueError("no images to put in a grid")
    cell_h = max(im.shape[0] for row in rows for im in row)
    cell_w = max(im.shape[1] for row in rows for im in row)
    columns = max(len(row) for row in rows)
    canvas = np.full(
        (len(rows) * (cell_h + gap) - gap, columns * (cell_w + gap) - gap, 3), 255, dtype=np.uint8
    )
    for r, row in enumerate(rows):
        for c, im in enumerate(row):
            top, left = r * (cell_h + gap), c * (cell_w + gap)
            canvas[top : top + im.shape[0], left : left + im.shape[1]] = im
    return Image.fromarray(canvas)
