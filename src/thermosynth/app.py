"""`thermosynth serve`: a web app (Gradio) for people who would rather click than write Python.

Three tabs: visible to thermal (upload a photo or pick a bundled RoadScene scene), text to infrared (prompt, negative
prompt, seed, steps, guidance) and palettes (recolour any thermal image). Every result comes as a palette rendering
to look at and as 8-bit and 16-bit grayscale PNGs to download.

A web form's inputs are anyone's: uploads are checked (readable image, at most `max_upload_mb` and `max_pixels`)
before any model runs, and a bad one gets a sentence in the page, never a traceback. One request at a time per model
(a queue, with progress). The server listens on 127.0.0.1 unless told otherwise, and nothing is fetched from the
network: no analytics (Gradio's fonts are served locally).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from thermosynth.data.errors import DataError
from thermosynth.data.images import image_size, read_thermal, read_visible
from thermosynth.data.sources import roadscene_pairs
from thermosynth.demo import DEMO_PROMPTS, SAMPLES
from thermosynth.render import PALETTES, colorize

# Gradio reports usage to its makers unless told not to; a thermal-imaging tool should not phone home.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

MAX_UPLOAD_MB = 20
# A server's default is lower than `translate`'s: a 1-megapixel photo (1200x833) took 82 s and peaked at 2.9 GB with
# the shipped model on 2 CPU cores (`/usr/bin/time -v thermosynth translate`, model loading included).
MAX_PIXELS = 1_000_000
KEPT_RESULTS = 100  # requests whose downloads stay on disk (Gradio serves its own copies from its cache)
MAX_SEED = 2**32 - 1  # the seed fields' range, checked by Gradio; torch would overflow past 2**64


def check_upload(path: str | None, what: str, max_pixels: int = MAX_PIXELS,
                 max_upload_mb: float = MAX_UPLOAD_MB) -> Path:
    """The uploaded file, or a DataError in words a person at a browser can act on (nothing is decoded)."""
    if not path:
        raise DataError(f"No {what} given: upload one first.")
    path = Path(path)
    megabytes = path.stat().st_size / 2**20
    if megabytes > max_upload_mb:
        raise DataError(f"{path.name} is {megabytes:.1f} MB, over this server's limit of {max_upload_mb} MB. "
                        "Upload a smaller file.")
    try:
        width, height = image_size(path)
    except Exception:  # PIL raises many types for files that are not images
        raise DataError(f"{path.name} is not an image thermosynth can read: upload a PNG, JPEG, TIFF or BMP "
                        f"{what}.") from None
    if width * height > max_pixels:
        raise DataError(
            f"{path.name} is {width}x{height}, {width * height / 1e6:.1f} million pixels: over this server's limit "
            f"of {max_pixels / 1e6:.1f} million. Downscale it first (or start the server with a higher --max-pixels).")
    return path


def seeded_generator(seed: float | None):
    """A torch generator from a seed field, which a person can leave empty (Gradio then passes None)."""
    import torch

    if seed is None:
        raise DataError(f"The seed is empty: give a whole number from 0 to {MAX_SEED}.")
    return torch.Generator().manual_seed(int(seed))


@dataclass
class ThermalResult:
    """What every tab returns: the rendering to show and the two PNGs to download."""

    rendering: np.ndarray
    png8: Path
    png16: Path

    def for_page(self) -> tuple[np.ndarray, str, str]:
        return self.rendering, str(self.png8), str(self.png16)  # Gradio's file outputs take str paths


class ThermalApp:
    """The app's work, apart from its page: load models once, check inputs, run them, write the downloads."""

    def __init__(self, v2t: str, t2ir: str, device: str | None = None, dtype: str | None = None,
                 max_pixels: int = MAX_PIXELS, max_upload_mb: float = MAX_UPLOAD_MB):
        from thermosynth.pipelines import load_pipeline, load_text_pipeline, prepare_for_inference

        self.max_pixels, self.max_upload_mb = max_pixels, max_upload_mb
        self.v2t = prepare_for_inference(load_pipeline(v2t), device, dtype=dtype)
        self.t2ir = prepare_for_inference(load_text_pipeline(t2ir), device, dtype=dtype)
        for pipeline in (self.v2t, self.t2ir):  # the page's progress bar follows the sampling steps' tqdm
            pipeline.set_progress_bar_config(disable=False, leave=False)
        # removed when the server stops; only the latest KEPT_RESULTS requests' files are kept while it runs
        self._folder = tempfile.TemporaryDirectory(prefix="thermosynth-app-")
        self.outputs = Path(self._folder.name)
        self._count = 0

    def translate(self, path: str | None, seed: int, steps: int, palette: str) -> tuple[np.ndarray, ThermalResult]:
        """The visible image (as read) and its thermal translation."""
        visible = read_visible(self._checked(path, "visible photo"))
        generator = seeded_generator(seed)
        thermal = self.v2t(visible, num_inference_steps=int(steps), generator=generator, output_type="pt").images
        return visible, self._result(thermal, self.v2t, Path(path).stem, palette)

    def generate(self, prompt: str, negative_prompt: str, seed: int, steps: int, guidance: float,
                 palette: str) -> ThermalResult:
        if not prompt or not prompt.strip():
            raise DataError("The prompt is empty: describe the scene to generate.")
        generator = seeded_generator(seed)
        thermal = self.t2ir(prompt, negative_prompt=negative_prompt or None, num_inference_steps=int(steps),
                            guidance_scale=float(guidance), generator=generator, output_type="pt").images
        return self._result(thermal, self.t2ir, f"generated-seed{int(seed)}", palette)

    def recolour(self, path: str | None, palette: str) -> ThermalResult:
        """Any thermal image (8 or 16-bit grayscale) in a palette, and as 8 and 16-bit PNGs."""
        thermal = read_thermal(self._checked(path, "thermal image"))
        if thermal.dtype == np.uint8:
            png8, png16 = thermal, thermal.astype(np.uint16) * 257
        else:
            png8, png16 = (thermal // 257).astype(np.uint8), thermal
        return self._save(colorize(thermal, palette), png8, png16, Path(path).stem)

    def _checked(self, path: str | None, what: str) -> Path:
        return check_upload(path, what, self.max_pixels, self.max_upload_mb)

    def _result(self, thermal, pipeline, stem: str, palette: str) -> ThermalResult:
        from thermosynth.pipelines.common import postprocess

        # one sampling run, converted twice: the pipelines' own 8-bit and 16-bit conversions
        (png8,) = postprocess(thermal, "pil", pipeline.normalization)
        (png16,) = postprocess(thermal, "pil16", pipeline.normalization)
        png8, png16 = np.asarray(png8), np.asarray(png16)
        return self._save(colorize(png8, palette), png8, png16, stem)  # the model's range, as `translate` renders

    def _save(self, rendering: np.ndarray, png8: np.ndarray, png16: np.ndarray, stem: str) -> ThermalResult:
        self._count += 1
        folder = self.outputs / f"{self._count:06d}"  # one folder per request: downloads keep their plain names
        folder.mkdir()
        shutil.rmtree(self.outputs / f"{self._count - KEPT_RESULTS:06d}", ignore_errors=True)
        paths = folder / f"{stem}-thermal-8bit.png", folder / f"{stem}-thermal-16bit.png"
        for array, target in zip((png8, png16), paths, strict=True):
            Image.fromarray(array).save(target, format="PNG")
        return ThermalResult(rendering, *paths)


def sample_images() -> list[Path]:
    """The bundled RoadScene test scenes (held out from v2t-roadscene's training)."""
    return [pair.visible for pair in roadscene_pairs(SAMPLES / "roadscene", "test")]


def build_page(app: ThermalApp):
    """The Gradio page around `app`."""
    import gradio as gr

    from thermosynth.pipelines.common import sampling_settings

    def page_errors(fn):
        def wrapped(*args):
            try:
                return fn(*args)
            except (DataError, ValueError) as error:  # said in the page; anything else is Gradio's plain "Error"
                raise gr.Error(str(error), print_exception=False) from None
        return wrapped

    def palette_choice():
        return gr.Radio(list(PALETTES), value="ironbow", label="Palette (the rendering; downloads are grayscale)")

    def downloads(tab: str):
        return gr.File(label="8-bit PNG", elem_id=f"{tab}-png8"), gr.File(label="16-bit PNG", elem_id=f"{tab}-png16")

    sampling_progress = gr.Progress(track_tqdm=True)  # Gradio finds it in a handler's defaults: steps as a bar
    v2t_steps, _ = sampling_settings(app.v2t, None, None)
    t2ir_steps, t2ir_guidance = sampling_settings(app.t2ir, None, None)
    with gr.Blocks(title="thermosynth", analytics_enabled=False) as page:
        gr.Markdown("# thermosynth\nThermal infrared images from visible photos and from text, with latent "
                    "diffusion. Results are 8-bit and 16-bit grayscale PNGs; the palette only colours the preview.")
        with gr.Tab("Visible to thermal"):
            with gr.Row():
                with gr.Column():
                    upload = gr.File(label=f"Visible photo (PNG, JPEG, TIFF, BMP; at most {app.max_upload_mb} MB and "
                                     f"{app.max_pixels / 1e6:g} million pixels)", elem_id="v2t-upload")
                    gr.Examples([[str(p)] for p in sample_images()], inputs=[upload],
                                label="Or pick a bundled RoadScene street scene (not seen in training)")
                    with gr.Row():
                        seed = gr.Number(0, label="Seed", precision=0, minimum=0, maximum=MAX_SEED)
                        steps = gr.Slider(1, 100, value=v2t_steps, step=1, label="Steps")
                    palette = palette_choice()
                    button = gr.Button("Translate to thermal", variant="primary", elem_id="v2t-run")
                with gr.Column():
                    visible_shown = gr.Image(label="Visible input", interactive=False, elem_id="v2t-visible")
                    shown = gr.Image(label="Thermal", interactive=False, elem_id="v2t-thermal")
                    png8, png16 = downloads("v2t")

            def run_translate(path, seed_value, steps_value, palette_value, progress=sampling_progress):
                visible, result = app.translate(path, seed_value, steps_value, palette_value)
                return visible, *result.for_page()

            button.click(page_errors(run_translate), [upload, seed, steps, palette],
                         [visible_shown, shown, png8, png16], concurrency_id="v2t", concurrency_limit=1)

        with gr.Tab("Text to infrared"):
            with gr.Row():
                with gr.Column():
                    prompt = gr.Textbox(DEMO_PROMPTS[0], label="Prompt", lines=3, elem_id="t2ir-prompt")
                    negative = gr.Textbox("", label="Negative prompt")
                    with gr.Row():
                        t_seed = gr.Number(0, label="Seed", precision=0, minimum=0, maximum=MAX_SEED)
                        t_steps = gr.Slider(1, 100, value=t2ir_steps, step=1, label="Steps", elem_id="t2ir-steps")
                        guidance = gr.Slider(1, 10, value=t2ir_guidance, step=0.5, label="Guidance (1: off)")
                    t_palette = palette_choice()
                    t_button = gr.Button("Generate", variant="primary", elem_id="t2ir-run")
                with gr.Column():
                    t_shown = gr.Image(label="Thermal", interactive=False, elem_id="t2ir-thermal")
                    t_png8, t_png16 = downloads("t2ir")

            def run_generate(text, negative_text, seed_value, steps_value, guidance_value, palette_value,
                             progress=sampling_progress):
                return app.generate(text, negative_text, seed_value, steps_value, guidance_value,
                                    palette_value).for_page()

            t_button.click(page_errors(run_generate), [prompt, negative, t_seed, t_steps, guidance, t_palette],
                           [t_shown, t_png8, t_png16], concurrency_id="t2ir", concurrency_limit=1)

        with gr.Tab("Palettes"):
            with gr.Row():
                with gr.Column():
                    thermal_upload = gr.File(label="Thermal image (8 or 16-bit grayscale PNG or TIFF)",
                                             elem_id="palette-upload")
                    p_palette = palette_choice()
                    p_button = gr.Button("Render", variant="primary", elem_id="palette-run")
                with gr.Column():
                    p_shown = gr.Image(label="Rendering", interactive=False, elem_id="palette-rendering")
                    p_png8, p_png16 = downloads("palette")

            def run_recolour(path, palette_value):
                return app.recolour(path, palette_value).for_page()

            p_button.click(page_errors(run_recolour), [thermal_upload, p_palette], [p_shown, p_png8, p_png16])
    return page


def check_address(host: str, port: int) -> None:
    """Say that the server cannot listen there before the models load, not after (Gradio's own error comes then)."""
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} is not a TCP port: give --port a number from 1 to 65535")
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a port that only lingers after use is free
            probe.bind((host, port))
    except OSError as error:
        raise ValueError(f"cannot listen on {host}:{port} ({error.strerror or error}): pass another --port or "
                         "--host, or stop what uses it") from None


def _stop_on_signals() -> None:
    """Ctrl+C and SIGTERM both stop the server cleanly (Gradio closes on KeyboardInterrupt; the result files go),
    also where a shell started it in the background with SIGINT ignored."""
    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)


def serve(v2t: str, t2ir: str, host: str = "127.0.0.1", port: int = 7860, device: str | None = None,
          dtype: str | None = None, max_pixels: int = MAX_PIXELS) -> None:
    """Load both models, then serve the page until interrupted."""
    check_address(host, port)
    print(f"loading {v2t} and {t2ir} ...", flush=True)
    app = ThermalApp(v2t, t2ir, device=device, dtype=dtype, max_pixels=max_pixels)
    page = build_page(app)
    page.queue(max_size=32)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"listening on {host}: anyone who can reach this machine on port {port} can use the app", flush=True)
    _stop_on_signals()
    page.launch(server_name=host, server_port=port, max_file_size=f"{MAX_UPLOAD_MB}mb",
                allowed_paths=[str(SAMPLES)], quiet=True, footer_links=[], prevent_thread_lock=True)
    # said once the page is served (launch returns after Gradio's startup events), not before: a browser or a test
    # that waits for this line must not find a port that is still opening
    print(f"thermosynth app on http://{host}:{port} (Ctrl+C stops it)", flush=True)
    page.block_thread()
