"""Captions for text-to-infrared training, written from annotations and capture metadata (offline, deterministic).

TxT2IR trains on captioned thermal images; thermosynth writes the captions itself. Each image gets several
captions (a detailed one with coarse positions, one with counts, a short one); training draws one at random per
step. They are stored as a Hugging Face `imagefolder` ``metadata.jsonl``: one line per image with ``file_name``
(relative to the metadata file) and ``text`` (the list of captions), plus ``split`` where the data set has splits.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

from PIL import Image

from thermosynth.data.errors import DataError
from thermosynth.data.images import atomic_write
from thermosynth.data.sources import Box, _read_split, hituav_frames, list_images, read_voc_boxes

METADATA_FILE = "metadata.jsonl"

# Annotation label -> (singular, plural); labels not listed (e.g. HIT-UAV's "DontCare") are not objects to name.
OBJECT_NAMES = {
    "person": ("person", "people"),
    "pedestrian": ("pedestrian", "pedestrians"),
    "car": ("car", "cars"),
    "bicycle": ("bicycle", "bicycles"),
    "othervehicle": ("other vehicle", "other vehicles"),
}
NUMBER_WORDS = ["no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
                "twelve"]
REGIONS = [["at the top left", "at the top", "at the top right"],
           ["on the left", "in the centre", "on the right"],
           ["at the bottom left", "at the bottom", "at the bottom right"]]


def number(count: int) -> str:
    return NUMBER_WORDS[count] if count < len(NUMBER_WORDS) else str(count)


def counted(label: str, count: int) -> str:
    singular, plural = OBJECT_NAMES[label]
    return f"{number(count)} {singular if count == 1 else plural}"


def object_counts(boxes: tuple[Box, ...] | list[Box]) -> Counter:
    """Count of each nameable object class (lower-case labels) among `boxes`."""
    return Counter(b.label.lower() for b in boxes if b.label.lower() in OBJECT_NAMES)


def _region(box: Box, width: int, height: int) -> str:
    column = min(2, int(3 * (box.xmin + box.xmax) / 2 / width))
    row = min(2, int(3 * (box.ymin + box.ymax) / 2 / height))
    return REGIONS[max(0, row)][max(0, column)]


def _placed(label: str, boxes: list[Box], width: int, height: int) -> str:
    """'three people on the left' or 'five people (three on the left, two in the centre)'."""
    regions = Counter(_region(b, width, height) for b in boxes).most_common()
    if len(regions) == 1:
        return f"{counted(label, len(boxes))} {regions[0][0]}"
    parts = [f"{number(n)} {where}" for where, n in regions[:2]]
    rest = len(boxes) - sum(n for _, n in regions[:2])
    return f"{counted(label, len(boxes))} (" + ", ".join(parts) + (f", {number(rest)} elsewhere" if rest else "") + ")"


def _scene_phrases(boxes: list[Box], width: int, height: int, placed: bool) -> list[str]:
    counts = object_counts(boxes)
    by_label = {label: [b for b in boxes if b.label.lower() == label] for label in counts}
    if placed:
        return [_placed(label, by_label[label], width, height) for label, _ in counts.most_common()]
    return [counted(label, n) for label, n in counts.most_common()]


def _join(phrases: list[str]) -> str:
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def _article(number: int) -> str:
    """The article spoken before a number: "an 80", "an 11", "an 8", otherwise "a"."""
    return "an" if str(number).startswith("8") or number in (11, 18) else "a"


def aerial_captions(boxes: list[Box], metadata: dict, width: int, height: int) -> list[str]:
    """Captions of a drone thermal frame (HIT-UAV): detailed with positions, with counts, and short."""
    time = {True: "daytime", False: "night-time"}.get(metadata.get("daylight"), "")
    view = "aerial thermal image"
    if "altitude_m" in metadata:
        view += f" from {metadata['altitude_m']} m"
    if "camera_angle_deg" in metadata:
        angle = metadata["camera_angle_deg"]
        view += f" at {_article(angle)} {angle} degree camera angle"
    opening = f"a {time} {view}" if time else f"an {view}"
    counts = object_counts(boxes)
    if not counts:
        return [f"{opening}: no people or vehicles", f"{opening} of an empty scene",
                f"{time or 'a'} drone thermal image, nobody in view".strip()]
    detailed = f"{opening}: " + _join(_scene_phrases(boxes, width, height, placed=True))
    with_counts = f"{opening} with " + _join(_scene_phrases(boxes, width, height, placed=False))
    kinds = _join([OBJECT_NAMES[label][1] for label, _ in counts.most_common()])
    short = f"{time + ' ' if time else ''}drone thermal image of {kinds}"
    return [detailed, with_counts, short]


def street_captions(boxes: list[Box]) -> list[str]:
    """Captions of a ground-level night street thermal frame (LLVIP: pedestrians are its only class)."""
    people = sum(object_counts(boxes).values())
    who = counted("pedestrian", people) if people else "no pedestrians"
    return [f"a night-time thermal image of a street with {who}", f"thermal infrared street scene at night, {who}",
            "night street, thermal camera" + ("" if people else ", empty")]


def _image_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as image:
            return image.size
    except Exception as error:  # PIL raises many types for broken files
        raise DataError(f"{path}: cannot be read as an image ({error}).") from error


def _relative(path: Path, base: Path) -> str:
    return Path(os.path.relpath(path.resolve(), base.resolve())).as_posix()


def caption_hituav(root: Path, out_dir: Path, skip_bad: bool = False) -> list[dict]:
    records = hituav_frames(root, split=None, skip_bad=skip_bad)
    split_of = {}
    for split in ("train", "val", "test"):
        split_file = root / "ImageSets" / "Main" / f"{split}.txt"
        if split_file.is_file():
            split_of.update(dict.fromkeys(_read_split(split_file), split))
    entries = []
    for record in records:
        width, height = _image_size(record.path)
        entry = {"file_name": _relative(record.path, out_dir),
                 "text": aerial_captions(list(record.boxes), record.metadata, width, height)}
        if record.path.stem in split_of:
            entry["split"] = split_of[record.path.stem]
        entries.append(entry)
    return entries


def caption_llvip(root: Path, out_dir: Path) -> list[dict]:
    entries = []
    for split in ("train", "test"):
        folder = root / "infrared" / split
        for image in list_images(folder) if folder.is_dir() else []:
            xml = root / "Annotations" / f"{image.stem}.xml"
            boxes = list(read_voc_boxes(xml)) if xml.is_file() else []
            entries.append({"file_name": _relative(image, out_dir), "text": street_captions(boxes), "split": split})
    return entries


def default_metadata_dir(root: Path) -> Path:
    """Where metadata.jsonl goes by default: beside the thermal images."""
    if (root / "JPEGImages").is_dir():
        return root / "JPEGImages"
    if (root / "infrared").is_dir():
        return root / "infrared"
    raise DataError(f"{root}: no HIT-UAV (JPEGImages/ + Annotations/) or LLVIP (infrared/ + Annotations/) layout "
                    "found to caption from annotations. Name a vision-language model (--vlm) to caption any folder.")


def write_metadata(entries: list[dict], out_dir: Path) -> Path:
    """Write ``out_dir/metadata.jsonl`` atomically (one JSON object a line)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if not os.access(out_dir, os.W_OK):
        raise DataError(f"{out_dir}: not writable. Pass --out DIR to write metadata.jsonl elsewhere.")
    target = out_dir / METADATA_FILE
    text = "".join(json.dumps(entry) + "\n" for entry in entries)
    atomic_write(target, lambda tmp: tmp.write_text(text))
    return target


def caption_from_annotations(root: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                             skip_bad: bool = False) -> Path:
    """Caption a HIT-UAV or LLVIP data set from its boxes and metadata; returns the metadata.jsonl written."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder.")
    out = Path(out_dir) if out_dir is not None else default_metadata_dir(root)
    if (root / "JPEGImages").is_dir():
        entries = caption_hituav(root, out, skip_bad)
    else:
        default_metadata_dir(root)  # raises the layout error
        entries = caption_llvip(root, out)
    return write_metadata(entries, out)


def read_metadata(path: str | os.PathLike, split: str | None = None) -> list[tuple[Path, list[str]]]:
    """(image path, captions) from a metadata.jsonl (or a folder holding one), optionally one split's."""
    path = Path(path)
    if path.is_dir():
        path = path / METADATA_FILE
    if not path.is_file():
        raise DataError(f"{path}: no metadata.jsonl. Write one with `thermosynth caption`.")
    items = []
    for number_, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            captions = [entry["text"]] if isinstance(entry["text"], str) else list(entry["text"])
            image = path.parent / entry["file_name"]
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise DataError(f"{path}:{number_}: expected a JSON object with file_name and text ({error}).") from error
        if not captions or not all(isinstance(c, str) and c for c in captions):
            raise DataError(f"{path}:{number_}: text must be a caption or a non-empty list of captions.")
        if split is None or entry.get("split") in (None, split):
            items.append((image, captions))
    if not items:
        raise DataError(f"{path}: no images{f' in split {split!r}' if split else ''}.")
    return items
