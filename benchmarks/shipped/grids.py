"""Grids of the shipped models' test outputs, for looking at (written next to RESULTS.md).

    python benchmarks/shipped/grids.py ../shared/data .shipped/device-results benchmarks/shipped

v2t-grid.jpg: RoadScene test pairs (every 5th); columns: visible | real thermal | v2t-roadscene | pix2pix.
t2ir-grid.jpg: HIT-UAV test captions (every 72nd); columns: real frame for that caption | mask loss off | on.
Each grid is written when the results hold its outputs (a lease trains V2T, T2IR or both: recipe.py --tasks).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from thermosynth.data.sources import load_pairs

# T2IR grids show every 72nd HIT-UAV test caption (8 rows of the 579); decoder.py's two-decoder grid shows the same
T2IR_GRID_EVERY = 72


def tile(path: Path, size: tuple[int, int]) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB").resize(size, Image.BILINEAR))


def save_grid(rows: list[list[Path]], size: tuple[int, int], path: Path) -> None:
    """One row of tiles (each resized to `size`) per list of image paths, saved as a JPEG."""
    tiles = [np.concatenate([tile(p, size) for p in row], axis=1) for row in rows]
    Image.fromarray(np.concatenate(tiles)).save(path, quality=85)
    print(f"wrote {path}")


def main(shared: Path, results: Path, out: Path) -> None:
    if (results / "test-v2t").is_dir():
        v2t_grid(shared, results, out)
    if (results / "t2ir-test-captions.jsonl").is_file():
        t2ir_grid(shared, results, out)


def v2t_grid(shared: Path, results: Path, out: Path) -> None:
    rows = [[pair.visible, pair.thermal, results / "test-v2t" / f"{pair.visible.stem}.png",
             results / "test-pix2pix" / f"{pair.visible.stem}.png"]
            for pair in load_pairs(shared / "roadscene", "test")[::5]]
    save_grid(rows, (256, 176), out / "v2t-grid.jpg")


def t2ir_grid(shared: Path, results: Path, out: Path) -> None:
    rows, captions = [], []
    records = [json.loads(line) for line in (results / "t2ir-test-captions.jsonl").read_text().splitlines()]
    for record in records[::T2IR_GRID_EVERY]:
        stem = record["stem"]
        rows.append([shared / "hit-uav" / "JPEGImages" / f"{stem}.jpg", results / "test-t2ir-mask-off" / f"{stem}.png",
                     results / "test-t2ir-mask-on" / f"{stem}.png"])
        captions.append(f"{stem}: {record['text']}")
    save_grid(rows, (240, 192), out / "t2ir-grid.jpg")
    (out / "t2ir-grid-captions.txt").write_text("\n".join(captions) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
