"""What a faster sampler costs in quality: DDIM and DPM-Solver++ at several step counts, each scored by
`thermosynth evaluate` on the same pairs with the same model, seed and guidance (issue 12).

    python benchmarks/perf/solvers.py .shipped/data/roadscene --split val          # the choice: validation pairs
    python benchmarks/perf/solvers.py ../shared/data/roadscene --split test --settings ddim:20 dpm++:10

For each setting (SAMPLER:STEPS; default ddim:50, the reference, then ddim:20, ddim:10, dpm++:20, dpm++:10): the
split is translated into a fresh folder (timed: generating every image, whole size, model loading excluded), then
scored by `thermosynth.evaluation.report.evaluate_pairs` as `thermosynth evaluate` scores it. The table puts each
setting's wall time and metrics beside the reference's; one JSON line per setting is appended to results.jsonl
beside this script, with the machine, versions and command. `grid.jpg` in --out shows, for a few pairs, visible |
real | one column per setting, for looking at what the numbers say.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from common import RESULTS, record, synchronize
from PIL import Image

from thermosynth.pipelines import INFERENCE_DTYPES

SAMPLERS = ("ddim", "dpm++")
SHOWN = ("ssim", "psnr", "mae", "hot_iou", "intensity_w1", "fd_efficientnet-lite0", "kid_efficientnet-lite0")


def setting(text: str) -> tuple[str, int]:
    """SAMPLER:STEPS, e.g. dpm++:10."""
    sampler, _, steps = text.partition(":")
    if sampler not in SAMPLERS or not steps.isdigit() or int(steps) < 1:
        raise argparse.ArgumentTypeError(f"expected SAMPLER:STEPS with SAMPLER one of {SAMPLERS}, got {text!r}")
    return sampler, int(steps)


def grid(pairs, folders: list[Path], labels: list[str], path: Path, count: int = 4, width: int = 256,
         gap: int = 4) -> None:
    """visible | real | each setting's output (named in a header row), for the first `count` pairs."""
    from PIL import ImageDraw

    from thermosynth.render import image_grid

    def tile(image_path: Path) -> np.ndarray:
        image = Image.open(image_path).convert("RGB")
        return np.asarray(image.resize((width, round(image.height * width / image.width)), Image.BILINEAR))

    rows = [[tile(p.visible), tile(p.thermal), *(tile(f / f"{p.visible.stem}.png") for f in folders)]
            for p in pairs[:count]]
    pictures = image_grid(rows, gap=gap)
    sheet = Image.new("RGB", (pictures.width, pictures.height + 16), "white")
    sheet.paste(pictures, (0, 16))
    for column, text in enumerate(("visible", "real thermal", *labels)):
        ImageDraw.Draw(sheet).text((column * (width + gap) + 4, 2), text, fill="black")
    sheet.save(path, quality=85)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, help="paired data set (any layout `thermosynth evaluate` reads)")
    parser.add_argument("--split", default="val", help="choices are made on validation pairs, never on test")
    parser.add_argument("--model", default="v2t-roadscene", help="a V2T model: shipped name or folder")
    parser.add_argument("--settings", type=setting, nargs="+", metavar="SAMPLER:STEPS",
                        default=[("ddim", 50), ("ddim", 20), ("ddim", 10), ("dpm++", 20), ("dpm++", 10)],
                        help="the first is the reference the others are compared with")
    parser.add_argument("--guidance", type=float, help="CFG scale (default: the model card's)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=tuple(INFERENCE_DTYPES), help="default: bf16 on CUDA, fp32 on the CPU")
    parser.add_argument("--out", type=Path, default=Path("solver-comparison"),
                        help="folder for each setting's images and report, and grid.jpg")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the JSON-lines file rows are appended to")
    args = parser.parse_args(argv)
    from thermosynth.data.sources import load_pairs
    from thermosynth.evaluation.report import evaluate_pairs
    from thermosynth.pipelines import load_pipeline, prepare_for_inference, set_scheduler
    from thermosynth.pipelines.common import sampling_settings
    from thermosynth.translate import translate_files

    pairs = load_pairs(args.data, args.split)  # a bad folder or split fails here, before the model loads
    dtype = args.dtype or ("bf16" if args.device.startswith("cuda") else "fp32")
    pipeline = prepare_for_inference(load_pipeline(args.model), args.device, "ddim", dtype)
    guidance = sampling_settings(pipeline, None, args.guidance)[1]
    for sampler, steps in args.settings:
        if (args.out / f"{sampler}-{steps}").exists():
            raise FileExistsError(f"{args.out / f'{sampler}-{steps}'} exists: give another --out (each setting's "
                                  "time needs a fresh folder)")
    rows, folders = [], []
    for sampler, steps in args.settings:
        folder = args.out / f"{sampler}-{steps}"
        set_scheduler(pipeline, sampler)
        generation = {"num_inference_steps": steps, "guidance_scale": guidance, "seed": 0,
                      "batch_size": args.batch_size}
        # generation alone: evaluate_pairs then finds every image and only scores. translate_files also hashes the
        # UNet's weights for its record of the folder (resumable.py; 0.09 s for the shipped V2T UNet on 2 CPU cores)
        start = time.perf_counter()
        translate_files(pipeline, [p.visible for p in pairs], folder / "generated", **generation)
        synchronize(args.device)
        seconds = time.perf_counter() - start
        report = evaluate_pairs(args.data, args.split, folder, pipeline=pipeline, generation=generation,
                                model=args.model)
        rows.append(record(args.results, {
            "question": "v2t sampler quality", "model": args.model, "data": str(args.data), "split": args.split,
            "pairs": len(pairs), "sampler": sampler, "steps": steps, "guidance": guidance, "dtype": dtype,
            "generation_s": round(seconds, 1), **{k: report["metrics"].get(k) for k in SHOWN}}, args.device))
        folders.append(folder / "generated")
    grid(pairs, folders, [f"{r['sampler']} {r['steps']} steps" for r in rows], args.out / "grid.jpg")

    reference = rows[0]
    print(f"{args.model} on {args.data} {args.split} ({len(pairs)} pairs), guidance {guidance}, {dtype} on "
          f"{rows[0]['device']}; differences are against {reference['sampler']}:{reference['steps']}\n")
    print("| sampler | steps | seconds generating | " + " | ".join(SHOWN) + " |\n|---|---|---|" + "---|" * len(SHOWN))
    for row in rows:
        cells = [f"{row[k]:.3f}" if row[k] is not None else "-" for k in SHOWN]
        if row is not reference:
            cells = [c if row[k] is None or reference[k] is None else f"{c} ({row[k] - reference[k]:+.3f})"
                     for c, k in zip(cells, SHOWN, strict=True)]
        print(f"| {row['sampler']} | {row['steps']} | {row['generation_s']:.0f} | " + " | ".join(cells) + " |")
    print(f"\ngrid (visible | real | one column per setting, in the table's order): {args.out / 'grid.jpg'}")


if __name__ == "__main__":
    main()
