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


def tile(path: Path, size: tuple[int, int]) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB").resize(size, Image.BILINEAR))


def main(shared: Path, results: Path, out: Path) -> None:
    if (results / "test-v2t").is_dir():
        v2t_grid(shared, results, out)
    if (results / "t2ir-test-captions.jsonl").is_file():
        t2ir_grid(shared, results, out)


def v2t_grid(shared: Path, results: Path, out: Path) -> None:
    rows = []
    for pair in load_pairs(shared / "roadscene", "test")[::5]:
        stem = pair.visible.stem
        paths = [pair.visible, pair.thermal, results / "test-v2t" / f"{stem}.png",
                 results / "test-pix2pix" / f"{stem}.png"]
        rows.append(np.concatenate([tile(p, (256, 176)) for p in paths], axis=1))
    Image.fromarray(np.concatenate(rows)).save(out / "v2t-grid.jpg", quality=85)
    print(f"wrote {out / 'v2t-grid.jpg'}")


def t2ir_grid(shared: Path, results: Path, out: Path) -> None:
    rows, captions = [], []
    records = [json.loads(line) for line in (results / "t2ir-test-captions.jsonl").read_text().splitlines()]
    for record in records[::72]:
        stem = record["stem"]
        paths = [shared / "hit-uav" / "JPEGImages" / f"{stem}.jpg", results / "test-t2ir-mask-off" / f"{stem}.png",
                 results / "test-t2ir-mask-on" / f"{stem}.png"]
        rows.append(np.concatenate([tile(p, (240, 192)) for p in paths], axis=1))
        captions.append(f"{stem}: {record['text']}")
    Image.fromarray(np.concatenate(rows)).save(out / "t2ir-grid.jpg", quality=85)
    (out / "t2ir-grid-captions.txt").write_text("\n".join(captions) + "\n")
    print(f"wrote {out / 't2ir-grid.jpg'}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
