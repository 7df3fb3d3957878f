"""Finding images on disk: paired visible/thermal layouts and thermal-only sets with boxes.

Readers return lightweight records (paths, optional caption and boxes); `decode_pairs` / `decode_thermal` read the
pixels and are where bad files are reported (or skipped with ``skip_bad``).

Layouts understood by `load_pairs` (auto-detected):
- two folders matched by file stem: ``visible/`` (or ``rgb``, ``vis``) and ``thermal/`` (or ``infrared``, ``ir``,
  ``lwir``) inside the given folder;
- RoadScene: ``cropinfrared/``, ``crop_LR_visible/``, ``splits/{train,test}.txt``;
- LLVIP: ``visible/{train,test}/``, ``infrared/{train,test}/``, VOC ``Annotations/``;
- a JSONL manifest, one object a line: ``{"visible": path, "thermal": path, "text": optional caption}``, paths
  relative to the manifest's folder.
Thermal-only (`load_thermal_images`): HIT-UAV (``JPEGImages/``, ``Annotations/``, ``ImageSets/Main/``), any
paired layout (its thermal side), or a plain folder of thermal images.
"""

from __future__ import annotations

import json
import logging
import os
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from thermosynth.data.errors import DataError
from thermosynth.data.images import list_images, read_thermal, read_visible

logger = logging.getLogger(__name__)

VISIBLE_DIR_NAMES = ("visible", "rgb", "vis")
THERMAL_DIR_NAMES = ("thermal", "infrared", "ir", "lwir")
MAX_ANNOTATION_BYTES = 10_000_000
SKIP_HINT = "or pass --skip-bad to skip it"


@dataclass(frozen=True)
class Box:
    label: str
    xmin: float
    ymin: float
    xmax: float
    ymax: float


@dataclass(frozen=True)
class PairRecord:
    visible: Path
    thermal: Path
    text: str | None = None
    boxes: tuple[Box, ...] = ()


@dataclass(frozen=True)
class ThermalRecord:
    path: Path
    boxes: tuple[Box, ...] = ()
    metadata: dict = field(default_factory=dict, hash=False, compare=False)


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DataError(f"{path}: {what} folder not found. Check the data set path and its layout.")
    return path


def _nonempty(records: list, where: Path) -> list:
    if not records:
        raise DataError(f"{where}: no images found. Check the path, the split name and the layout.")
    return records


def _read_split(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"{path}: split file not found. Name an existing split (e.g. train, test) or omit it.")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _match_by_stem(
    visible: list[Path], thermal: list[Path], skip_bad: bool, where: Path, text: dict[str, str] | None = None
) -> list[PairRecord]:
    thermal_by_stem = {p.stem: p for p in thermal}
    visible_by_stem = {p.stem: p for p in visible}
    pairs = []
    for stem, vis in visible_by_stem.items():
        if stem not in thermal_by_stem:
            _bad(f"{vis}: visible image has no thermal pair (no '{stem}.*' in the thermal folder). "
                 f"Add the thermal image or remove this one, {SKIP_HINT}.", skip_bad)
            continue
        pairs.append(PairRecord(vis, thermal_by_stem[stem], (text or {}).get(stem)))
    for stem, th in thermal_by_stem.items():
        if stem not in visible_by_stem:
            _bad(f"{th}: thermal image has no visible pair. Add the visible image or remove this one, {SKIP_HINT}.",
                 skip_bad)
    return _nonempty(pairs, where)


def _bad(message: str, skip_bad: bool) -> None:
    if not skip_bad:
        raise DataError(message)
    logger.warning("skipped: %s", message)


def folder_pairs(visible_dir: str | os.PathLike, thermal_dir: str | os.PathLike, skip_bad: bool = False):
    """Pairs from two folders, matched by file stem (``a.jpg`` pairs with ``a.png``)."""
    visible_dir, thermal_dir = Path(visible_dir), Path(thermal_dir)
    visible = list_images(_require_dir(visible_dir, "visible"))
    thermal = list_images(_require_dir(thermal_dir, "thermal"))
    if not visible:
        raise DataError(f"{visible_dir}: folder holds no images (png, jpg, tif, bmp).")
    return _match_by_stem(visible, thermal, skip_bad, visible_dir)


def roadscene_pairs(root: str | os.PathLike, split: str | None = "train", skip_bad: bool = False):
    """RoadScene: ``cropinfrared/`` + ``crop_LR_visible/``, optionally restricted to ``splits/<split>.txt``."""
    root = Path(root)
    pairs = folder_pairs(root / "crop_LR_visible", root / "cropinfrared", skip_bad)
    if split is None:
        return pairs
    keep = set(_read_split(root / "splits" / f"{split}.txt"))
    return _nonempty([p for p in pairs if p.visible.stem in keep], root / "splits" / f"{split}.txt")


def llvip_pairs(root: str | os.PathLike, split: str = "train", skip_bad: bool = False):
    """LLVIP: ``visible/<split>/`` + ``infrared/<split>/``, person boxes from ``Annotations/<stem>.xml``."""
    root = Path(root)
    pairs = folder_pairs(root / "visible" / split, root / "infrared" / split, skip_bad)
    annotations = root / "Annotations"
    return [
        PairRecord(p.visible, p.thermal, p.text, read_voc_boxes(annotations / f"{p.visible.stem}.xml"))
        if (annotations / f"{p.visible.stem}.xml").is_file() else p
        for p in pairs
    ]


def manifest_pairs(path: str | os.PathLike, skip_bad: bool = False) -> list[PairRecord]:
    """Pairs listed in a JSONL manifest (``visible``, ``thermal``, optional ``text``)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: manifest not found.")
    base = path.parent
    pairs = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            visible, thermal = base / entry["visible"], base / entry["thermal"]
            text = entry.get("text")
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise DataError(
                f"{path}:{number}: each line must be a JSON object with 'visible' and 'thermal' paths ({error})."
            ) from error
        if text is not None and not isinstance(text, str):
            raise DataError(f"{path}:{number}: 'text' must be a string.")
        missing = [p for p in (visible, thermal) if not p.is_file()]
        if missing:
            _bad(f"{path}:{number}: {missing[0]} does not exist. Fix the path (relative to the manifest), "
                 f"{SKIP_HINT}.", skip_bad)
            continue
        pairs.append(PairRecord(visible, thermal, text))
    return _nonempty(pairs, path)


def read_voc_boxes(path: Path) -> tuple[Box, ...]:
    """Object boxes from a Pascal VOC XML file."""
    if path.stat().st_size > MAX_ANNOTATION_BYTES:
        raise DataError(f"{path}: annotation file is implausibly large; is it a VOC XML file?")
    try:
        root = ET.parse(path).getroot()
        boxes = []
        for obj in root.iter("object"):
            bb = obj.find("bndbox")
            coords = [float(bb.find(k).text) for k in ("xmin", "ymin", "xmax", "ymax")]
            boxes.append(Box(obj.find("name").text.strip(), *coords))
    except (ET.ParseError, AttributeError, TypeError, ValueError) as error:
        raise DataError(f"{path}: not a readable Pascal VOC annotation ({error}). Fix or remove it.") from error
    return tuple(boxes)


def hituav_metadata(stem: str) -> dict:
    """Capture metadata from a HIT-UAV file name ``<daylight>_<altitude m>_<angle deg>_<x>_<frame>``."""
    parts = stem.split("_")
    try:
        return {"daylight": bool(int(parts[0])), "altitude_m": int(parts[1]), "camera_angle_deg": int(parts[2])}
    except (IndexError, ValueError):
        return {}


def hituav_frames(root: str | os.PathLike, split: str | None = "train", skip_bad: bool = False):
    """HIT-UAV: thermal frames with VOC boxes and the metadata encoded in their names."""
    root = Path(root)
    images = list_images(_require_dir(root / "JPEGImages", "JPEGImages"))
    if split is not None:
        keep = set(_read_split(root / "ImageSets" / "Main" / f"{split}.txt"))
        images = [p for p in images if p.stem in keep]
    records = []
    for image in images:
        xml = root / "Annotations" / f"{image.stem}.xml"
        if not xml.is_file():
            _bad(f"{xml}: annotation missing for {image.name}. Add it, {SKIP_HINT}.", skip_bad)
            continue
        records.append(ThermalRecord(image, read_voc_boxes(xml), hituav_metadata(image.stem)))
    return _nonempty(records, root)


def _subdir(root: Path, names: Sequence[str]) -> Path | None:
    for child in sorted(root.iterdir()) if root.is_dir() else []:
        if child.is_dir() and child.name.lower() in names:
            return child
    return None


def load_pairs(path: str | os.PathLike, split: str | None = None, skip_bad: bool = False) -> list[PairRecord]:
    """Pairs from any supported layout, detected from what is on disk."""
    path = Path(path)
    if path.is_file() and path.suffix.lower() in (".jsonl", ".json"):
        return manifest_pairs(path, skip_bad)
    if not path.is_dir():
        raise DataError(f"{path}: not a folder or a .jsonl manifest.")
    if (path / "cropinfrared").is_dir():
        return roadscene_pairs(path, split, skip_bad)
    visible, thermal = _subdir(path, VISIBLE_DIR_NAMES), _subdir(path, THERMAL_DIR_NAMES)
    if visible and thermal:
        if split is not None and (visible / split).is_dir():
            return llvip_pairs(path, split, skip_bad)
        if split is None and (visible / "train").is_dir():
            raise DataError(f"{path}: this LLVIP-style set has splits; name one (e.g. --split train).")
        if split is not None:
            logger.warning("%s: this layout has no splits; using all its pairs", path)
        return folder_pairs(visible, thermal, skip_bad)
    raise DataError(
        f"{path}: no paired layout found. Expected visible/ + thermal/ folders (matched by file name), the RoadScene "
        "or LLVIP layout, or a .jsonl manifest with 'visible' and 'thermal' paths."
    )


def load_visible_images(path: str | os.PathLike, split: str | None = None) -> list[Path]:
    """The visible images of a paired layout (what translation reads); its thermal side need not exist."""
    path = Path(path)
    if (path / "crop_LR_visible").is_dir():  # RoadScene
        files = list_images(path / "crop_LR_visible")
        if split is not None:
            keep = set(_read_split(path / "splits" / f"{split}.txt"))
            files = [f for f in files if f.stem in keep]
        return _nonempty(files, path / "crop_LR_visible")
    visible = _subdir(path, VISIBLE_DIR_NAMES)
    if visible is None:
        raise DataError(f"{path}: no visible/ (or rgb/, vis/) folder and not the RoadScene layout: give image files, "
                        "a folder of images, or a paired data set.")
    if split is not None and (visible / split).is_dir():  # LLVIP
        return _nonempty(list_images(visible / split), visible / split)
    return _nonempty(list_images(visible), visible)


def is_thermal_only(path: Path) -> bool:
    """True for the HIT-UAV layout and for a plain folder of images; False for paired layouts."""
    if (path / "JPEGImages").is_dir():
        return True
    if path.is_file() or (path / "cropinfrared").is_dir():
        return False
    if _subdir(path, VISIBLE_DIR_NAMES) and _subdir(path, THERMAL_DIR_NAMES):
        return False
    return path.is_dir() and bool(list_images(path))


def load_thermal_images(path: str | os.PathLike, split: str | None = None, skip_bad: bool = False):
    """Thermal images (with boxes where the layout has them): HIT-UAV, a plain folder, or a paired layout's IR."""
    path = Path(path)
    if (path / "JPEGImages").is_dir():
        return hituav_frames(path, split, skip_bad)
    if is_thermal_only(path):
        if split is not None:
            logger.warning("%s: a plain folder has no splits; using all its images", path)
        return [ThermalRecord(p) for p in list_images(path)]
    return [ThermalRecord(p.thermal, p.boxes) for p in load_pairs(path, split, skip_bad)]


def _decode_all(items: list, decode: Callable, skip_bad: bool) -> list:
    out = []
    for item in items:
        try:
            out.append((item, decode(item)))
        except DataError as error:
            _bad(str(error), skip_bad)
    return out


def decode_pairs(records: list[PairRecord], skip_bad: bool = False) -> list[tuple[PairRecord, np.ndarray, np.ndarray]]:
    """Read every pair: (record, visible (H, W, 3) uint8, thermal (H, W) raw). Pairs must be pixel-aligned."""

    def decode(record: PairRecord):
        visible, thermal = read_visible(record.visible), read_thermal(record.thermal)
        if visible.shape[:2] != thermal.shape:
            raise DataError(
                f"{record.visible} is {visible.shape[1]}x{visible.shape[0]} but its thermal pair {record.thermal} "
                f"is {thermal.shape[1]}x{thermal.shape[0]}. Pairs must be pixel-aligned: register or resize them, "
                f"{SKIP_HINT}."
            )
        return visible, thermal

    decoded = [(r, v, t) for r, (v, t) in _decode_all(records, decode, skip_bad)]
    if not decoded:
        raise DataError("every pair was skipped as unreadable; nothing left to use.")
    return decoded


def decode_thermal(records: list[ThermalRecord], skip_bad: bool = False) -> list[tuple[ThermalRecord, np.ndarray]]:
    decoded = _decode_all(records, lambda r: read_thermal(r.path), skip_bad)
    if not decoded:
        raise DataError("every thermal image was skipped as unreadable; nothing left to use.")
    return decoded
