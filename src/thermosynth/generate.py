"""`thermosynth generate`: N thermal images for one prompt, resumable.

Image i is drawn with its own generator seeded from (seed, i), and an interrupted run resumes by writing only the
missing ``OUT/<i>.png``. Batches are formed before processes share them (`accelerate launch`), so N processes write
byte for byte what one process writes (a different batch size changes an image at most in its last bits).
``OUT/generate.json`` records the model (a fingerprint of its weights), the prompt and the settings; a folder made
with another model, prompt or seed is refused rather than mixed (resumable.py).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from thermosynth.data.images import atomic_write
from thermosynth.distributed import is_main_process, this_process_share, wait_for_everyone
from thermosynth.pipelines.common import sampling_settings
from thermosynth.render import PALETTES, colorize
from thermosynth.resumable import check_settings, model_settings, write_settings

logger = logging.getLogger(__name__)


def generate_images(model, prompt: str, out: Path, count: int = 4, seed: int = 0,
                    num_inference_steps: int | None = None, guidance_scale: float | None = None,
                    negative_prompt: str | None = None, scheduler: str = "ddim",
                    bit_depth: int = 8, palettes: tuple[str, ...] = (), device: str | None = None,
                    batch_size: int = 4, dtype: str | None = None) -> list[Path]:
    """Write `count` images for `prompt` into `out`; `model` is a pipeline folder, hub id or loaded pipeline."""
    if count < 1:
        raise ValueError(f"-n must be >= 1, got {count}")
    for palette in palettes:
        if palette not in PALETTES:
            raise ValueError(f"unknown palette {palette!r}; choose from {PALETTES}")
    if isinstance(model, (str, Path)):
        from thermosynth.pipelines import load_text_pipeline, prepare_for_inference

        pipeline = prepare_for_inference(load_text_pipeline(str(model)), device, scheduler, dtype)
    else:
        pipeline = model
    num_inference_steps, guidance_scale = sampling_settings(pipeline, num_inference_steps, guidance_scale)
    settings = {**model_settings(pipeline), "prompt": prompt, "negative_prompt": negative_prompt,
                "seed": seed, "steps": num_inference_steps, "guidance": guidance_scale,
                "scheduler": type(pipeline.scheduler).__name__, "bit_depth": bit_depth}
    record = out / "generate.json"
    check_settings(record, settings, "images")

    targets = [out / f"{i:04d}.png" for i in range(count)]

    def missing(i: int) -> bool:
        return not (targets[i].is_file() and all((out / p / targets[i].name).is_file() for p in palettes))

    batches = [list(range(start, min(start + batch_size, count))) for start in range(0, count, batch_size)]
    todo = [chunk for chunk in ([i for i in batch if missing(i)] for batch in this_process_share(batches)) if chunk]
    output_type = "pil16" if bit_depth == 16 else "pil"
    for chunk in tqdm(todo, desc="generate", unit="batch", disable=not is_main_process()):
        generators = [torch.Generator().manual_seed(seed * 1_000_003 + i) for i in chunk]
        images = pipeline([prompt] * len(chunk), negative_prompt=negative_prompt, generator=generators,
                          num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                          output_type=output_type).images
        write_settings(record, settings)  # with the first image
        for i, image in zip(chunk, images, strict=True):
            atomic_write(targets[i], lambda tmp, im=image: im.save(tmp, format="PNG"))
            for palette in palettes:
                rendering = Image.fromarray(colorize(np.asarray(image), palette))
                atomic_write(out / palette / targets[i].name, lambda tmp, r=rendering: r.save(tmp, format="PNG"))
    wait_for_everyone()  # every process returns once the whole set is written
    return targets
