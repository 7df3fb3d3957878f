"""`thermosynth generate`: N thermal images for one prompt, resumable.

Image i is drawn with its own generator seeded from (seed, i), so the set does not depend on batching and an
interrupted run resumes by writing only the missing ``OUT/<i>.png``. ``OUT/generate.json`` records the prompt and
settings; a folder made for another prompt or seed is refused rather than mixed.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from thermosynth.data.images import atomic_write
from thermosynth.render import PALETTES, colorize

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
    settings = {"prompt": prompt, "negative_prompt": negative_prompt, "seed": seed, "steps": num_inference_steps,
                "guidance": guidance_scale, "scheduler": scheduler, "bit_depth": bit_depth}
    record = out / "generate.json"
    if record.is_file():
        previous = json.loads(record.read_text())
        if previous != settings:
            raise ValueError(f"{out} holds images made with other settings ({record}); use another --out folder.")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(record, lambda tmp: tmp.write_text(json.dumps(settings, indent=2) + "\n"))

    targets = [out / f"{i:04d}.png" for i in range(count)]
    done = [t.is_file() and all((out / p / t.name).is_file() for p in palettes) for t in targets]
    todo = [i for i in range(count) if not done[i]]
    if not todo:
        return targets
    if isinstance(model, (str, Path)):
        from thermosynth.pipelines import load_text_pipeline, prepare_for_inference

        pipeline = prepare_for_inference(load_text_pipeline(str(model)), device, scheduler, dtype)
    else:
        pipeline = model
    output_type = "pil16" if bit_depth == 16 else "pil"
    for start in tqdm(range(0, len(todo), batch_size), desc="generate", unit="batch"):
        chunk = todo[start : start + batch_size]
        generators = [torch.Generator().manual_seed(seed * 1_000_003 + i) for i in chunk]
        images = pipeline([prompt] * len(chunk), negative_prompt=negative_prompt, generator=generators,
                          num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                          output_type=output_type).images
        for i, image in zip(chunk, images, strict=True):
            atomic_write(targets[i], lambda tmp, im=image: im.save(tmp, format="PNG"))
            for palette in palettes:
                rendering = Image.fromarray(colorize(np.asarray(image), palette))
                atomic_write(out / palette / targets[i].name, lambda tmp, r=rendering: r.save(tmp, format="PNG"))
    return targets
