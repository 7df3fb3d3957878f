"""Captions from a vision-language model the user names (a folder or hub id; nothing is downloaded otherwise).

Any transformers image-text-to-text model works: encoder-decoder captioners (BLIP, ViT-GPT2) from the image alone,
LLaVA-style chat models with `prompt`. Finished batches are appended to ``metadata.jsonl.partial`` as they are
made, so an interrupted run resumes where it stopped; at the end the captions are merged into ``metadata.jsonl``
(added to an image's existing captions, e.g. those written from annotations) with one atomic write.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from thermosynth.data.captions import METADATA_FILE, _relative, write_metadata
from thermosynth.data.errors import DataError
from thermosynth.data.images import list_images, read_thermal, read_visible
from thermosynth.distributed import check_device
from thermosynth.render import stretch_to_uint8
from thermosynth.resumable import check_settings, write_settings

logger = logging.getLogger(__name__)

DEFAULT_PROMPT = "Describe this thermal infrared image in one sentence."
# For face photos (LaPIG captions its faces with a VLM): what is visible, not who it is or guesses about the person.
FACE_PROMPT = ("Describe the visible appearance of this face in one sentence: hair, facial hair, glasses, "
               "expression, lighting. Do not guess identity, age, ethnicity or anything not visible.")


def _image_folder(data: Path) -> Path:
    for candidate in (data / "JPEGImages", data / "infrared", data):
        if candidate.is_dir() and list_images(candidate):
            return candidate
    raise DataError(f"{data}: no images to caption (looked in JPEGImages/, infrared/ and the folder itself).")


def _read_done(partial: Path) -> dict[str, str]:
    done = {}
    if partial.is_file():
        for line in partial.read_text().splitlines():
            try:
                entry = json.loads(line)
                done[entry["file_name"]] = entry["text"][0]
            except (json.JSONDecodeError, KeyError, IndexError):  # a line cut short by a crash: redo that image
                continue
    return done


def _load(model_id: str, device: str):
    from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoProcessor, AutoTokenizer

    model = AutoModelForImageTextToText.from_pretrained(model_id).to(device).eval()
    try:
        processor = AutoProcessor.from_pretrained(model_id)
    except (OSError, ValueError, TypeError):
        processor = None
    tokenizer = getattr(processor, "tokenizer", None) or AutoTokenizer.from_pretrained(model_id)
    if processor is None or not hasattr(processor, "tokenizer"):
        processor = AutoImageProcessor.from_pretrained(model_id)  # an encoder-decoder captioner: image only
    return processor, tokenizer, model


@torch.no_grad()
def caption_with_vlm(data: str | os.PathLike, model_id: str, out: str | os.PathLike | None = None,
                     batch_size: int = 8, device: str | None = None, prompt: str | None = None,
                     max_new_tokens: int = 40, files: list[Path] | None = None, visible: bool = False) -> Path:
    """Caption every image of `data` (or the given `files`) with `model_id`; returns the metadata.jsonl written.
    Thermal images by default; `visible` reads colour photos (faces) and asks FACE_PROMPT unless given one."""
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    folder = _image_folder(Path(data)) if files is None else Path(data)
    out_dir = Path(out) if out is not None else folder
    out_dir.mkdir(parents=True, exist_ok=True)
    partial = out_dir / (METADATA_FILE + ".partial")
    prompt = prompt or (FACE_PROMPT if visible else DEFAULT_PROMPT)
    # an interrupted run resumes only with the model and question that began it (resumable.py)
    record, settings = partial.with_name(partial.name + ".json"), {"model": model_id, "prompt": prompt,
                                                                   "max_new_tokens": max_new_tokens}
    check_settings(record, settings, "an interrupted captioning run")
    done = _read_done(partial)
    read = (lambda path: read_visible(path)) if visible else (lambda path: _as_8bit(read_thermal(path)))
    images = [(p, _relative(p, out_dir)) for p in (list_images(folder) if files is None else files)]
    todo = [(p, name) for p, name in images if name not in done]
    logger.info("%d images, %d captioned already", len(images), len(images) - len(todo))

    if todo:
        device = check_device(device) if device else ("cuda" if torch.cuda.is_available() else "cpu")
        processor, tokenizer, model = _load(model_id, device)
        chat = hasattr(processor, "tokenizer")
        write_settings(record, settings)
        with partial.open("a") as sink:
            for start in tqdm(range(0, len(todo), batch_size), desc="caption", unit="batch"):
                chunk = todo[start : start + batch_size]
                pictures = [Image.fromarray(read(p)).convert("RGB") for p, _ in chunk]
                if chat:
                    inputs = processor(images=pictures, text=[_chat_text(processor, prompt)] * len(chunk),
                                       return_tensors="pt", padding=True)
                else:
                    inputs = {"pixel_values": processor(images=pictures, return_tensors="pt")["pixel_values"]}
                inputs = {k: v.to(device) for k, v in inputs.items()}
                ids = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
                if "input_ids" in inputs and model.config.is_encoder_decoder is False:
                    ids = ids[:, inputs["input_ids"].shape[1] :]  # a decoder-only chat model repeats its prompt
                for (_, name), text in zip(chunk, tokenizer.batch_decode(ids, skip_special_tokens=True), strict=True):
                    caption = " ".join(text.split())
                    sink.write(json.dumps({"file_name": name, "text": [caption]}) + "\n")
                    done[name] = caption
                sink.flush()
                os.fsync(sink.fileno())

    target = write_metadata(_merged(out_dir / METADATA_FILE, done), out_dir)
    partial.unlink(missing_ok=True)
    record.unlink(missing_ok=True)
    return target


def _as_8bit(thermal: np.ndarray) -> np.ndarray:
    """What the VLM sees: 8-bit images as they are, 16-bit ones stretched min..max."""
    return thermal if thermal.dtype == np.uint8 else stretch_to_uint8(thermal)


def _chat_text(processor, question: str) -> str:
    if getattr(processor, "chat_template", None):
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        return processor.apply_chat_template(messages, add_generation_prompt=True)
    return question


def _merged(existing: Path, captions: dict[str, str]) -> list[dict]:
    """Existing entries with the new caption added (once), then entries for images they did not list."""
    entries = []
    if existing.is_file():
        entries = [json.loads(line) for line in existing.read_text().splitlines() if line.strip()]
    listed = set()
    for entry in entries:
        listed.add(entry["file_name"])
        texts = [entry["text"]] if isinstance(entry["text"], str) else list(entry["text"])
        new = captions.get(entry["file_name"])
        entry["text"] = texts + ([new] if new and new not in texts else [])
    entries += [{"file_name": name, "text": [text]} for name, text in captions.items() if name not in listed]
    return entries
