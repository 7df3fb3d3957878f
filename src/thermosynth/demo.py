"""`thermosynth demo`: thermosynth's two jobs on the bundled samples, with a contact sheet to look at.

With the shipped models installed (`v2t-roadscene`, `t2ir-hituav`) it trains nothing: it translates the 3 held-out
RoadScene scenes bundled in `samples/` and generates one thermal image for each of a few prompts, in about a minute
on 2 CPU cores. Without them it says so and trains `tiny` models on the samples instead (CPU minutes, rough images:
the point is then only that every stage runs). Either way it writes the images, each palette's rendering, and a
contact sheet (`contact-sheet.png` and a self-contained `contact-sheet.html`) into the output folder.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from thermosynth.data.images import atomic_write, read_thermal, read_visible
from thermosynth.data.sources import roadscene_pairs
from thermosynth.pretrained import SHIPPED, is_installed
from thermosynth.render import PALETTES, colorize

logger = logging.getLogger(__name__)

SAMPLES = Path(__file__).parent / "samples"
# Written the way `thermosynth caption` describes HIT-UAV frames, the language t2ir-hituav was trained on.
DEMO_PROMPTS = (
    "a night-time aerial thermal image from 60 m at a 60 degree camera angle: three people in the centre "
    "and two cars on the right",
    "a daytime aerial thermal image from 100 m at a 90 degree camera angle: 12 cars (six at the top, six at "
    "the bottom)",
    "a night-time aerial thermal image from 80 m at a 30 degree camera angle: no people or vehicles",
)
SHEET_HEIGHT = 192  # each picture's height on the sheet


def run_demo(out: Path, steps: int | None = None, ae_steps: int = 250, v2t_steps: int = 500) -> Path:
    """Write the demo into `out`; returns the contact sheet's HTML page. `steps` overrides the sampling steps."""
    from thermosynth.pipelines import load_pipeline, load_text_pipeline, prepare_for_inference
    from thermosynth.translate import translate_files

    out = Path(out)
    test_pairs = roadscene_pairs(SAMPLES / "roadscene", "test")
    rows = []
    shipped = all(is_installed(name) for name in SHIPPED)
    if shipped:
        print("Shipped models found: translating 3 held-out street scenes with v2t-roadscene, then generating "
              f"{len(DEMO_PROMPTS)} images from text with t2ir-hituav (no training).", flush=True)
        v2t = prepare_for_inference(load_pipeline("v2t-roadscene"))
    else:
        print("No shipped model is installed (src/thermosynth/pretrained/ holds no v2t-roadscene / t2ir-hituav): "
              "training tiny models on the bundled samples instead, a few CPU minutes, rough images.", flush=True)
        v2t = prepare_for_inference(load_pipeline(str(_train_tiny(out, ae_steps, v2t_steps))))
    translated = out / "translated"
    # made again on every run: the demo shows what the models make now, with this run's --steps (a folder made with
    # other settings would otherwise be refused, resumable.py)
    for folder in (translated, out / "generated"):
        shutil.rmtree(folder, ignore_errors=True)
    translate_files(v2t, [p.visible for p in test_pairs], translated, num_inference_steps=steps, palettes=PALETTES)
    for pair in test_pairs:
        made = read_thermal(translated / f"{pair.visible.stem}.png")
        rows.append((f"visible to thermal: {pair.visible.name} (RoadScene test, not seen in training)",
                     [("visible", read_visible(pair.visible)), ("real thermal", _rgb(read_thermal(pair.thermal))),
                      *_renderings(made)]))

    if shipped:
        from thermosynth.generate import generate_images

        t2ir = prepare_for_inference(load_text_pipeline("t2ir-hituav"))
        for index, prompt in enumerate(DEMO_PROMPTS):
            folder = out / "generated" / f"prompt-{index + 1}"
            (image,) = generate_images(t2ir, prompt, folder, count=1, num_inference_steps=steps, palettes=PALETTES)
            rows.append((f"text to infrared: \u201c{prompt}\u201d", _renderings(read_thermal(image))))
    return write_contact_sheet(rows, out)


def _train_tiny(out: Path, ae_steps: int, v2t_steps: int) -> Path:
    from thermosynth.training import DataConfig, make_config, train

    roadscene, hituav = SAMPLES / "roadscene", SAMPLES / "hit-uav"
    autoencoder = train(make_config("autoencoder", "tiny", output_dir=str(out / "autoencoder-run"), steps=ae_steps,
                                    data=DataConfig(paths=[str(roadscene), str(hituav)])))
    return train(make_config("v2t", "tiny", output_dir=str(out / "v2t-run"), steps=v2t_steps,
                             autoencoder=str(autoencoder), data=DataConfig(paths=[str(roadscene)])))


def _rgb(thermal: np.ndarray) -> np.ndarray:
    return np.repeat(thermal[..., None], 3, axis=2)


def _renderings(thermal: np.ndarray) -> list[tuple[str, np.ndarray]]:
    return [(f"generated, {palette}", colorize(thermal, palette)) for palette in PALETTES]


def _fit_height(image: np.ndarray) -> Image.Image:
    picture = Image.fromarray(image)
    width = round(picture.width * SHEET_HEIGHT / picture.height)
    return picture.resize((width, SHEET_HEIGHT), Image.Resampling.LANCZOS)


def write_contact_sheet(rows: list[tuple[str, list[tuple[str, np.ndarray]]]], out: Path) -> Path:
    """contact-sheet.png (each row under its title) and contact-sheet.html (the same, images embedded, captions
    under each picture); returns the HTML page's path."""
    gap, title_height = 6, 18
    pictures = [[(caption, _fit_height(image)) for caption, image in row] for _, row in rows]
    width = max(sum(p.width + gap for _, p in row) for row in pictures) + gap
    sheet = Image.new("RGB", (width, len(rows) * (title_height + SHEET_HEIGHT + gap) + gap), "white")
    draw = ImageDraw.Draw(sheet)
    top = gap
    for (title, _), row in zip(rows, pictures, strict=True):
        draw.text((gap, top + 2), title[:180], fill="black")
        left = gap
        for _, picture in row:
            sheet.paste(picture, (left, top + title_height))
            left += picture.width + gap
        top += title_height + SHEET_HEIGHT + gap
    atomic_write(out / "contact-sheet.png", lambda tmp: sheet.save(tmp, format="PNG"))

    sections = []
    for (title, _), row in zip(rows, pictures, strict=True):
        figures = "".join(f'<figure><img src="data:image/jpeg;base64,{_jpeg_base64(p)}" alt="{html.escape(c)}">'
                          f"<figcaption>{html.escape(c)}</figcaption></figure>" for c, p in row)
        sections.append(f"<section><h2>{html.escape(title)}</h2><div>{figures}</div></section>")
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>thermosynth demo</title><style>"
            "body{font-family:sans-serif;margin:1em}h2{font-size:1em;font-weight:normal}div{display:flex;"
            "flex-wrap:wrap;gap:6px}figure{margin:0}figcaption{font-size:.8em;color:#444}</style></head><body>"
            "<h1>thermosynth demo</h1>" + "".join(sections) + "</body></html>\n")
    atomic_write(out / "contact-sheet.html", lambda tmp: tmp.write_text(page, encoding="utf-8"))
    return out / "contact-sheet.html"


def _jpeg_base64(picture: Image.Image) -> str:
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=90)
    return base64.b64encode(buffer.getvalue()).decode("ascii")
