"""Side-by-side grid from a finished quality run: visible | real thermal | V2T | pix2pix, for test pairs.

    python benchmarks/quality/grid.py ../shared/data/roadscene runs/quality benchmarks/quality/grid.jpg
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

from thermosynth.data.images import read_thermal, read_visible
from thermosynth.data.sources import load_pairs
from thermosynth.render import image_grid


def comparison_grid(data: str, run: Path, target: Path, rows: int = 6, width: int = 1400) -> None:
    pairs = load_pairs(data, "test")
    chosen = [pairs[i] for i in np.linspace(0, len(pairs) - 1, rows).round().astype(int)]
    grey = lambda a: np.repeat(a[..., None], 3, axis=2)  # noqa: E731
    made = lambda model, pair: run / f"eval-{model}" / "generated" / f"{pair.visible.stem}.png"  # noqa: E731
    table = [[read_visible(p.visible), grey(read_thermal(p.thermal)),
              *(grey(read_thermal(made(m, p))) for m in ("v2t", "pix2pix"))] for p in chosen]
    grid = image_grid(table)
    grid = grid.resize((width, round(grid.height * width / grid.width)), Image.Resampling.LANCZOS)
    grid.convert("RGB").save(target, quality=88)


if __name__ == "__main__":
    comparison_grid(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]))
