"""`thermosynth evaluate`: score generated thermal images against a data set split and write a report.

Generates what is missing (resumable, through `translate_files`), then computes, on the thermal channel:
paired SSIM / PSNR / MAE at the native size, hot-region IoU and intensity W1, and the Fréchet distance and KID on
EfficientNet-Lite0 features; FID (Inception-v3) and LPIPS when their weights are present (optional.py).
The same pairs are scored for trivial predictors (visible in grayscale, its inverse, a flat image at the real mean),
side by side with the model. Writes ``report.json``, ``report.md``, ``grid.png`` (visible | real | generated |
absolute difference in ironbow) and ``histogram.png`` into the output folder. Features of the real images are
cached per (data set files, split, extractor) under ``$XDG_CACHE_HOME/thermosynth/reference``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from thermosynth.data.errors import DataError
from thermosynth.data.images import atomic_write, read_thermal, read_visible
from thermosynth.data.normalization import ThermalNormalization
from thermosynth.data.sources import PairRecord, load_pairs
from thermosynth.distributed import SCORED_ALONE, is_main_process
from thermosynth.environment import describe
from thermosynth.evaluation.distribution import KID_SUBSETS, feature_distances, kid_subset_size
from thermosynth.evaluation.features import EfficientNetLite0Features
from thermosynth.evaluation.optional import MetricUnavailable, inception_fid_metric, lpips_metric
from thermosynth.evaluation.paired import PairedThermalMetrics
from thermosynth.evaluation.thermal import HotRegionIoU, IntensityHistogramDistance
from thermosynth.render import colorize, image_grid, tensor_to_rgb

logger = logging.getLogger(__name__)

PREPROCESSING = {
    "paired": "thermal channel at the real image's native size, in the model's normalised range on a 0..255 scale "
              "(real and 16-bit generated images through the model's thermal normalisation)",
    "features": EfficientNetLite0Features.preprocessing + "; aspect ratio not kept",
    "hot_mask": "Otsu threshold per image, opening radius 1, regions under 4 pixels dropped",
}


def _as_model_range(thermal: np.ndarray, path: Path, normalization: ThermalNormalization | None,
                    generated: bool = False) -> torch.Tensor:
    """(H, W) image -> (1, 1, H, W) float64 in [-1, 1], in the model's units: real images (and 16-bit generated ones,
    which hold raw values) through the model's thermal normalisation; 8-bit generated images are already in the
    model's range. Without a normalisation only 8-bit images can be compared (read as 0..255)."""
    if generated and thermal.dtype == np.uint8:
        return torch.from_numpy(thermal.astype(np.float64))[None, None] / 127.5 - 1
    if normalization is None:
        if thermal.dtype == np.uint16:
            raise DataError(f"{path} is a 16-bit thermal image: say how raw values map to the model's range. Score "
                            "with --model (its recorded normalisation), or give --thermal-normalization / "
                            "--thermal-range as the model was trained.")
        return torch.from_numpy(thermal.astype(np.float64))[None, None] / 127.5 - 1
    try:
        values = normalization.normalize(thermal, normalization.range_of(thermal))
    except DataError as error:
        raise DataError(f"{path}: {error}") from error
    return torch.from_numpy(values.astype(np.float64))[None, None]


def trivial_predictions(visible: np.ndarray, real: torch.Tensor) -> dict[str, torch.Tensor]:
    """Predictors that need no model, scored beside every model so one that ignores its input shows at once: the
    visible image in grayscale (ITU-R BT.601 luma), its inverse (black-hot), and a flat image at the real image's
    mean grey level (the best constant for MAE-like scores). `real` is (1, 1, H, W) in [-1, 1]."""
    height, width = real.shape[2:]
    if visible.shape[:2] != (height, width):  # pairs should be aligned; compare at the real image's size anyway
        visible = np.asarray(Image.fromarray(visible).resize((width, height), Image.Resampling.BILINEAR))
    luma = visible.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    gray = torch.from_numpy(luma.round())[None, None] / 127.5 - 1
    mean_level = ((real.mean() + 1) * 127.5).round() / 127.5 - 1  # whole grey levels, as an 8-bit output would be
    return {"visible_gray": gray, "visible_gray_inverted": -gray, "flat_real_mean": torch.full_like(real, mean_level)}


def _to_uint8_rgb(thermal: torch.Tensor) -> torch.Tensor:
    """(1, 1, H, W) in [-1, 1] -> (1, 3, H, W) uint8, the input torchmetrics' FID expects."""
    return ((thermal + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1)


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "thermosynth" / "reference"


def _reference_key(pairs: list[PairRecord], extractor_name: str, normalization: dict | None) -> str:
    digest = hashlib.sha256(f"{extractor_name}|{json.dumps(normalization, sort_keys=True)}".encode())
    for pair in pairs:
        stat = pair.thermal.stat()
        digest.update(f"{pair.thermal.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:24]


def _reference_cache(pairs: list[PairRecord], extractor_name: str, normalization: dict | None) -> Path:
    return _cache_dir() / f"{extractor_name}-{_reference_key(pairs, extractor_name, normalization)}.safetensors"


def _histogram_plot(real: torch.Tensor, generated: torch.Tensor, path: Path) -> None:
    """Grey-level histograms of real (blue) and generated (orange) pixels, drawn without a plotting library."""
    width, height, margin = 532, 260, 10
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    peak = float(max(real.max(), generated.max())) or 1.0
    for histogram, colour in ((real, (40, 90, 200)), (generated, (230, 120, 20))):
        points = [(margin + 2 * level, height - margin - (height - 3 * margin) * float(v) / peak)
                  for level, v in enumerate(histogram)]
        draw.line(points, fill=colour, width=2)
    draw.line([(margin, height - margin), (width - margin, height - margin)], fill="black")
    draw.text((margin, 2), "grey level 0..255: real (blue), generated (orange)", fill="black")
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))


def _markdown(report: dict) -> str:
    lines = [f"# Evaluation: {report['data']} ({report['split']}, {report['pairs']} pairs)", "",
             "| metric | value |", "|---|---|"]
    lines += [f"| {name} | {value:.4f} |" for name, value in report["metrics"].items()]
    if report.get("trivial_predictors"):
        lines += ["", "The same pairs scored for predictors that need no model (a model should beat all three):", "",
                  "| predictor | ssim | psnr | mae |", "|---|---|---|---|",
                  f"| this model | {report['metrics']['ssim']:.4f} | {report['metrics']['psnr']:.2f} | "
                  f"{report['metrics']['mae']:.2f} |"]
        lines += [f"| {name} | {m['ssim']:.4f} | {m['psnr']:.2f} | {m['mae']:.2f} |"
                  for name, m in report["trivial_predictors"].items()]
    if report.get("not_computed"):
        lines += ["", "Not computed:"] + [f"- {reason}" for reason in report["not_computed"]]
    if report.get("model"):
        lines += ["", "Model: " + report["model"]]
    if report.get("made_with"):
        lines += ["", "Made with (the generated folder's record): "
                  + ", ".join(f"{key} {value}" for key, value in report["made_with"].items())]
    lines += ["", "Generated images: " + report["generated"], ""]
    lines += [f"- {name}: {text}" for name, text in report["preprocessing"].items()]
    lines += ["", "Fréchet distance and KID are on EfficientNet-Lite0 features: they are not FID/KID-Inception and "
              "are not comparable with numbers computed on Inception-v3.", ""]
    return "\n".join(lines)


def _made_with(record: Path) -> dict | None:
    """The model fingerprint and settings that `translate` recorded beside the generated images (None for images
    made elsewhere)."""
    return json.loads(record.read_text()) if record.is_file() else None


def _check_generated(folder: Path, pairs: list[PairRecord]) -> None:
    """Every pair's generated image is there, checked before any scoring: a DataError naming what is missing."""
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder of generated images. Give the folder `thermosynth translate` "
                        "wrote, or pass --model to generate them.")
    missing = [pair for pair in pairs if not (folder / f"{pair.visible.stem}.png").is_file()]
    if missing:
        raise DataError(f"{folder / missing[0].visible.stem}.png: generated image missing for {missing[0].visible} "
                        f"({len(missing)} of {len(pairs)} missing). Generate them (pass --model) or remove the pairs "
                        "from the split.")


def evaluate_pairs(
    data: str | Path,
    split: str | None,
    out: Path,
    generated: Path | None = None,
    pipeline=None,
    generation: dict | None = None,
    skip_bad: bool = False,
    inception_weights: str | Path | None = None,
    model: str | None = None,
    normalization: ThermalNormalization | None = None,
) -> dict | None:
    """Evaluate `generated` images (or those `pipeline` makes into ``out/generated``) against `data`'s split.

    Real images are compared in the model's units: through `normalization`, by default the pipeline's recorded one
    (needed for 16-bit data; 8-bit data without one is read as 0..255).

    FID (Inception-v3) and LPIPS are added when their weights are found (see optional.py); otherwise the report
    says why they are missing. `model` is recorded in the report (the folder or hub id the pipeline came from).
    Under `accelerate launch` every process generates its share, and the main process alone scores and returns the
    report (the others return None).
    """
    from thermosynth.translate import RECORD, translate_files

    out = Path(out)
    pairs = load_pairs(data, split, skip_bad)
    if normalization is None and pipeline is not None:
        normalization = pipeline.normalization
    if pipeline is not None:
        generated = out / "generated"
        counts = translate_files(pipeline, [p.visible for p in pairs], generated, skip_bad=skip_bad,
                                 **(generation or {}))
        logger.info("generation: %s", counts)  # counted over all processes: every share is written now
    if not is_main_process():
        return None
    if generated is None:
        raise ValueError("give either generated images (a folder) or a model to make them")
    _check_generated(Path(generated), pairs)

    paired, hot, histogram = (PairedThermalMetrics(**SCORED_ALONE), HotRegionIoU(**SCORED_ALONE),
                              IntensityHistogramDistance(**SCORED_ALONE))
    optional, not_computed = {}, []
    distributions = len(pairs) >= 2  # a set's mean and covariance (FD, FID) and KID's subsets need two images
    if not distributions:
        not_computed.append(f"Fréchet distance, KID and FID not computed: they compare sets of at least 2 images, "
                            f"and {data} ({split}) has {len(pairs)} pair")
    for name, factory in (("fid_inception-v3", lambda: inception_fid_metric(inception_weights, **SCORED_ALONE)),
                          ("lpips_alex", lambda: lpips_metric(**SCORED_ALONE))):
        if name.startswith("fid") and not distributions:
            continue
        try:
            optional[name] = factory()
        except MetricUnavailable as reason:
            if name.startswith("fid") and inception_weights is not None:
                raise  # asked for by path: fail rather than write a report without it
            not_computed.append(str(reason))
    extractor = cache = real_features = None
    if distributions:
        extractor = EfficientNetLite0Features()
        cache = _reference_cache(pairs, extractor.name, normalization and normalization.to_dict())
        if cache.is_file():
            real_features = load_file(cache)["features"]
            logger.info("reference features from cache %s", cache)
    trivial: dict[str, PairedThermalMetrics] = {}
    new_real_features, fake_features, rows = [], [], []
    for pair in tqdm(pairs, desc="score", leave=False):
        made_path = Path(generated) / f"{pair.visible.stem}.png"
        real = _as_model_range(read_thermal(pair.thermal), pair.thermal, normalization)
        made = _as_model_range(read_thermal(made_path), made_path, normalization, generated=True)
        if real.shape != made.shape:
            raise DataError(f"{made_path} is {made.shape[3]}x{made.shape[2]} but the real image {pair.thermal} is "
                            f"{real.shape[3]}x{real.shape[2]}; generate at the input size.")
        paired.update(made, real)
        visible = read_visible(pair.visible)
        for name, prediction in trivial_predictions(visible, real).items():
            trivial.setdefault(name, PairedThermalMetrics(**SCORED_ALONE)).update(prediction, real)
        if "fid_inception-v3" in optional:
            optional["fid_inception-v3"].update(_to_uint8_rgb(real), real=True)
            optional["fid_inception-v3"].update(_to_uint8_rgb(made), real=False)
        if "lpips_alex" in optional:
            optional["lpips_alex"].update(made.expand(-1, 3, -1, -1).float(), real.expand(-1, 3, -1, -1).float())
        hot.update(made, real)
        histogram.update(real, real=True)
        histogram.update(made, real=False)
        if distributions:
            if real_features is None:
                new_real_features.append(extractor(real))
            fake_features.append(extractor(made))
        if len(rows) < 8:
            difference = ((made - real).abs()[0, 0].numpy() * 127.5).clip(0, 255).astype(np.uint8)
            rows.append([visible, tensor_to_rgb(real[0]), tensor_to_rgb(made[0]),
                         colorize(difference, "ironbow")])

    distances, preprocessing = {}, dict(PREPROCESSING)
    if distributions:
        if real_features is None:
            real_features = torch.cat(new_real_features)
            atomic_write(cache, lambda tmp: save_file({"features": real_features.contiguous()}, tmp))
        kid_subset = kid_subset_size(len(pairs), cap=50)
        distances = feature_distances(real_features, torch.cat(fake_features), extractor, kid_subset)
        preprocessing["kid"] = f"{KID_SUBSETS} subsets of {kid_subset} images"
    metrics = {**paired.compute(), **hot.compute(), **histogram.compute(), **distances,
               **{name: float(metric.compute()) for name, metric in optional.items()}}
    report = {
        "data": str(data), "split": split, "pairs": len(pairs), "model": model, "generated": str(generated),
        "generation": generation or {}, "made_with": _made_with(Path(generated) / RECORD), "metrics": metrics,
        "not_computed": not_computed,
        "thermal_normalization": normalization and normalization.to_dict(),
        "trivial_predictors": {name: metric.compute() for name, metric in trivial.items()},
        "preprocessing": preprocessing,
        "environment": describe(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "report.json", lambda tmp: tmp.write_text(json.dumps(report, indent=2) + "\n"))
    atomic_write(out / "report.md", lambda tmp: tmp.write_text(_markdown(report)))
    grid = image_grid(rows)
    if grid.width > 1600:  # keep the report light; the full-size images are in the generated folder
        grid = grid.resize((1600, round(grid.height * 1600 / grid.width)), Image.Resampling.LANCZOS)
    atomic_write(out / "grid.png", lambda tmp: grid.save(tmp, format="PNG"))
    _histogram_plot(histogram.real_histogram, histogram.generated_histogram, out / "histogram.png")
    return report
