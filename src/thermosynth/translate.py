"""Batch translation of image files with a VisibleToThermalPipeline: the engine behind `thermosynth translate`.

Resumable: outputs are written atomically and inputs whose output exists are skipped; ``OUT/translate.json`` records
the model (a fingerprint of its weights) and the sampling settings, and a folder made with others is refused rather
than mixed or, under `evaluate`, scored as this model's (resumable.py). Each image's noise comes from (seed, file
name), so the order of inputs, the batch size and resumption change an output at most in its last bits (through the
other images in its batch). Batches are formed before processes share them, so N processes of `accelerate launch`
write byte for byte what one process writes.
"""

from __future__ import annotations

import logging
import os
import zlib
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from thermosynth.data.errors import DataError
from thermosynth.data.images import atomic_write, image_size, list_images, read_visible
from thermosynth.data.sources import is_thermal_only, load_pairs, load_visible_images
from thermosynth.distributed import is_main_process, summed_counts, this_process_share
from thermosynth.pipelines.common import sampling_settings
from thermosynth.render import PALETTES, colorize
from thermosynth.resumable import check_settings, model_settings, write_settings

logger = logging.getLogger(__name__)

RECORD = "translate.json"  # in the output folder: the model and settings that made its images (resumable.py)


def collect_inputs(inputs: list[str | os.PathLike], split: str | None = None, skip_bad: bool = False) -> list[Path]:
    """Visible image files from files, plain folders, or paired data sets (their visible side of `split`)."""
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_file() and item.suffix.lower() in (".jsonl", ".json"):
            files += [p.visible for p in load_pairs(item, split, skip_bad)]
        elif item.is_file():
            files.append(item)
        elif item.is_dir() and not is_thermal_only(item) and any(p.is_dir() for p in item.iterdir()):
            files += load_visible_images(item, split)  # the thermal side, if any, is not needed
        elif item.is_dir():
            found = list_images(item)
            if not found:
                raise DataError(f"{item}: folder holds no images (png, jpg, tif, bmp).")
            files += found
        else:
            raise DataError(f"{item}: no such file or folder.")
    seen: dict[str, Path] = {}
    for path in files:
        if path.stem in seen and seen[path.stem] != path:
            raise DataError(
                f"{path} and {seen[path.stem]} would both be written as {path.stem}.png; translate them separately."
            )
        seen[path.stem] = path
    return list(seen.values())


# Translation holds full-size activations: about 2 KB per pixel on the CPU (1.5 MP peaked at 3.8 GB with the shipped
# model), so 4 million pixels need ~9 GB; an 8000x6000 photo would need ~90 GB and be killed.
MAX_PIXELS = 4_000_000


def check_input(path: Path, max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """The image's (width, height) from a readable header with at most `max_pixels` pixels, or a DataError naming
    the file and the fix (no decoding)."""
    try:
        width, height = image_size(path)
    except Exception as error:  # PIL raises many types for broken files
        raise DataError(
            f"{path}: cannot be read as an image ({error}). Replace or delete it, or pass --skip-bad to skip it."
        ) from error
    if width * height > max_pixels:
        raise DataError(
            f"{path}: {width}x{height} is {width * height / 1e6:.1f} million pixels, over the limit of "
            f"{max_pixels / 1e6:.1f} million (translation needs about 2 KB of memory per pixel). Downscale it, or "
            "raise --max-pixels if this machine has the memory."
        )
    return width, height


def check_inputs(paths: list[Path], max_pixels: int = MAX_PIXELS, skip_bad: bool = False) -> list[Path]:
    """The inputs that pass `check_input`; with skip_bad, the others are logged and dropped, else the first raises."""
    usable = []
    for path in paths:
        try:
            check_input(path, max_pixels)
            usable.append(path)
        except DataError as error:
            if not skip_bad:
                raise
            logger.warning("skipped: %s", error)
    return usable


def image_seed(seed: int, path: Path) -> int:
    return (seed * 1_000_003 + zlib.crc32(path.name.encode())) % 2**63


def _translation_settings(pipeline, num_inference_steps: int | None, guidance_scale: float | None, seed: int,
                         bit_depth: int) -> dict:
    """What makes a translation what it is: the model's weights and, where it samples, its sampler, steps, guidance
    (as given, else the model's recorded ones) and seed; pix2pix maps an image in one pass and takes none of them."""
    settings = {**model_settings(pipeline), "bit_depth": bit_depth}
    if "scheduler" in pipeline.components:
        steps, guidance = sampling_settings(pipeline, num_inference_steps, guidance_scale)
        settings.update(scheduler=type(pipeline.scheduler).__name__, steps=steps, guidance=guidance, seed=seed)
    return settings


def translate_files(
    pipeline,
    inputs: list[Path],
    out_dir: Path,
    num_inference_steps: int | None = None,  # None: the model's recorded settings (see sampling_settings)
    guidance_scale: float | None = None,
    seed: int = 0,
    batch_size: int = 4,
    bit_depth: int = 8,
    palettes: tuple[str, ...] = (),
    skip_bad: bool = False,
    max_pixels: int = MAX_PIXELS,
) -> dict[str, int]:
    """Translate every input to ``out_dir/<stem>.png`` (palette renderings in ``out_dir/<palette>/``).

    Returns counts: written, skipped_existing, skipped_bad (summed over processes). Under `accelerate launch` each
    process translates its own contiguous share of `inputs`.
    """
    if bit_depth not in (8, 16):
        raise ValueError(f"bit depth must be 8 or 16, got {bit_depth}")
    for palette in palettes:
        if palette not in PALETTES:
            raise ValueError(f"unknown palette {palette!r}; choose from {PALETTES}")
    out_dir = Path(out_dir)
    record = out_dir / RECORD
    settings = _translation_settings(pipeline, num_inference_steps, guidance_scale, seed, bit_depth)
    check_settings(record, settings, "translations")
    # Every process checks and groups all inputs alike, so a batch holds the same images however many processes
    # share the batches; bad inputs are counted once, by the main process.
    by_size: dict[tuple[int, int], list[Path]] = defaultdict(list)
    bad = 0
    for path in inputs:
        try:
            by_size[check_input(path, max_pixels)].append(path)
        except DataError as error:
            if not skip_bad:
                raise
            bad += 1
            if is_main_process():
                logger.warning("skipped: %s", error)
    batches = [paths[i : i + batch_size] for paths in by_size.values() for i in range(0, len(paths), batch_size)]
    mine = this_process_share(batches)
    counts = {"written": 0, "skipped_existing": 0, "skipped_bad": bad if is_main_process() else 0}

    output_type = "pil16" if bit_depth == 16 else "pil"
    progress = tqdm(total=sum(map(len, mine)), desc="translate", unit="img", disable=not is_main_process())
    for batch in mine:
        chunk, images = [], []
        for path in batch:
            targets = [out_dir / f"{path.stem}.png", *(out_dir / p / f"{path.stem}.png" for p in palettes)]
            if all(t.is_file() for t in targets):
                counts["skipped_existing"] += 1
                progress.update(1)
                continue
            try:
                images.append(read_visible(path))
                chunk.append(path)
            except DataError as error:
                if not skip_bad:
                    raise
                logger.warning("skipped: %s", error)
                counts["skipped_bad"] += 1
                progress.update(1)
        if not chunk:
            continue
        generators = [torch.Generator().manual_seed(image_seed(seed, p)) for p in chunk]
        results = pipeline(
            images, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
            generator=generators, output_type=output_type,
        ).images
        write_settings(record, settings)  # with the first image
        for path, result in zip(chunk, results, strict=True):
            atomic_write(out_dir / f"{path.stem}.png", lambda tmp, r=result: r.save(tmp, format="PNG"))
            for palette in palettes:
                rendering = Image.fromarray(colorize(np.asarray(result), palette))
                atomic_write(out_dir / palette / f"{path.stem}.png",
                             lambda tmp, r=rendering: r.save(tmp, format="PNG"))
            counts["written"] += 1
        progress.update(len(chunk))
    progress.close()
    return summed_counts(counts)
