"""What each optimisation buys, one at a time, before and after in the same run (issue 12, point 2).

    python benchmarks/perf/optimisations.py training --preset base --resolution 256 --batch-size 32
    python benchmarks/perf/optimisations.py sampling --batch-sizes 1 64 --steps 20
    python benchmarks/perf/optimisations.py training --task t2ir --preset tiny --resolution 64 --batch-size 4  # CPU

Each question climbs a ladder: the first rung is the slowest sensible setting, and every later rung adds one
optimisation to all the rungs below it, so a row's "x previous" is what that one change bought on top of the others,
and "x first" is where the whole ladder has got to. The order follows what each change needs (flash attention runs
only in 16-bit; CUDA graphs need a compiled network).

- training: one step of the plain diffusers training loop (plain_loops.training_step) on the preset's V2T or T2IR
  UNet, `--steps` timed after `--warmup`. Rungs: fp32 with the latents encoded by the frozen autoencoder at every step
  and diffusers' classic attention (the matmul-softmax-matmul of `AttnProcessor`) and AdamW's default kernel; + cached
  latents (what thermosynth's loop does: the autoencoder runs once per image, before training); + SDPA attention
  (`AttnProcessor2_0`, diffusers' default; flash attention where the GPU and dtype allow); + bf16 autocast; + fused
  AdamW; + channels_last; + torch.compile of the UNet (its first step, which holds the compile, is reported).
- sampling: one whole V2T translation by thermosynth's pipeline (encode, DDIM with classifier-free guidance, decode),
  median of `--repeats` after an untimed first call, per batch size. Rungs: fp32 with classic attention; + SDPA;
  + bf16 weights; + channels_last; + torch.compile of the UNet (static shapes); + CUDA graphs (compile mode
  reduce-overhead; on the CPU it compiles as the rung below).

Which of these thermosynth uses: cached latents, SDPA and fused AdamW always; bf16 by default on CUDA
(`--mixed-precision bf16` to train); torch.compile with `--compile`; channels_last not (yet): this script is where
that is decided. One JSON line per rung is appended to results.jsonl beside this script; the table is printed.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import torch
from common import RESULTS, record, timed
from plain_loops import TEXT_WIDTH, training_step

AUTOENCODER = Path(__file__).parents[2] / "src" / "thermosynth" / "pretrained" / "autoencoder"

# Each rung: (name, the setting it adds). A rung's settings are its own and every earlier rung's.
TRAINING_RUNGS = (
    ("fp32, latents encoded every step, classic attention, AdamW foreach", {}),
    ("+ cached latents", {"cached_latents": True}),
    ("+ SDPA attention", {"sdpa": True}),
    ("+ bf16 autocast", {"bf16": True}),
    ("+ fused AdamW", {"fused_adamw": True}),
    ("+ channels_last", {"channels_last": True}),
    ("+ torch.compile", {"compile": "default"}),
)
SAMPLING_RUNGS = (
    ("fp32, classic attention", {}),
    ("+ SDPA attention", {"sdpa": True}),
    ("+ bf16 weights", {"bf16": True}),
    ("+ channels_last", {"channels_last": True}),
    ("+ torch.compile", {"compile": "default"}),
    ("+ CUDA graphs (reduce-overhead)", {"compile": "reduce-overhead"}),
)


def climb(rungs) -> list[tuple[str, dict]]:
    """(name, cumulative settings) per rung."""
    settings, ladder = {}, []
    for name, added in rungs:
        settings = {**settings, **added}
        ladder.append((name, settings))
    return ladder


def set_attention(module: torch.nn.Module, sdpa: bool) -> int:
    """diffusers' SDPA processor (its default) or the classic one, on every attention layer of `module` (UNet2DModel
    has no set_attn_processor, so the layers are found one by one); returns how many there are."""
    from diffusers.models.attention_processor import Attention, AttnProcessor, AttnProcessor2_0

    layers = [m for m in module.modules() if isinstance(m, Attention)]
    for layer in layers:
        layer.set_processor(AttnProcessor2_0() if sdpa else AttnProcessor())
    return len(layers)


def training_rung(args, settings: dict) -> tuple[float, float]:
    """(seconds per timed step, seconds of the first step) of the plain loop with `settings`, from a fresh UNet."""
    from diffusers import AutoencoderKL

    from thermosynth.models.configs import build_t2ir_unet, build_v2t_unet

    torch.manual_seed(0)
    unet = (build_v2t_unet(args.architecture) if args.task == "v2t"
            else build_t2ir_unet(args.architecture, TEXT_WIDTH)).to(args.device).train()
    set_attention(unet, settings.get("sdpa", False))
    autoencoder = None
    if not settings.get("cached_latents"):
        autoencoder = AutoencoderKL.from_pretrained(args.autoencoder).to(args.device).eval().requires_grad_(False)
        set_attention(autoencoder, settings.get("sdpa", False))
    step = training_step(unet, args.task, args.batch_size, args.resolution // 8, args.device,
                         bf16=settings.get("bf16", False), fused_adamw=settings.get("fused_adamw", False),
                         channels_last=settings.get("channels_last", False), autoencoder=autoencoder)
    if settings.get("compile"):
        unet.compile(mode=settings["compile"])
    return timed(step, args.device, args.steps, warmup=args.warmup)


def sampling_rung(args, settings: dict, pipeline, batch: int) -> tuple[float, float]:
    """(median seconds of one translation, seconds of the first call) with `settings`, on a copy of `pipeline`."""
    pipeline = copy.deepcopy(pipeline)
    dtype = torch.bfloat16 if settings.get("bf16") else torch.float32
    pipeline.to(dtype=dtype)
    for module in (pipeline.unet, pipeline.vae):
        set_attention(module, settings.get("sdpa", False))
        if settings.get("channels_last"):
            module.to(memory_format=torch.channels_last)
    if settings.get("compile"):
        pipeline.unet.compile(mode=settings["compile"], dynamic=False)
    visible = torch.rand(batch, 3, args.resolution, args.resolution, device=args.device) * 2 - 1

    def call():
        return pipeline(visible, num_inference_steps=args.steps, guidance_scale=args.guidance, output_type="pt",
                        generator=torch.Generator().manual_seed(0))

    return timed(call, args.device, args.repeats)


def print_table(rows: list[dict], unit: str) -> None:
    print(f"| rung | {unit} | x previous | x first | first call s |\n|---|---|---|---|---|")
    for row in rows:
        if row["seconds"] is None:
            print(f"| {row['rung']} | {row['error']} | | | |", flush=True)
            continue
        print(f"| {row['rung']} | {row['seconds'] * 1e3:.1f} | {row['speedup_previous']:.2f} | "
              f"{row['speedup_first']:.2f} | {row['first_call_s']:.1f} |", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    questions = parser.add_subparsers(dest="question", required=True)
    training = questions.add_parser("training", help="one training step of the plain loop, rung by rung")
    training.add_argument("--task", default="v2t", choices=("v2t", "t2ir"))
    training.add_argument("--preset", default="base", help="the task's preset whose UNet is trained")
    training.add_argument("--resolution", type=int, default=256, help="image side in pixels (latents are 1/8)")
    training.add_argument("--batch-size", type=int, default=32)
    training.add_argument("--steps", type=int, default=30, help="timed steps per rung")
    training.add_argument("--warmup", type=int, default=5, help="untimed steps per rung, after the first")
    training.add_argument("--autoencoder", default=AUTOENCODER, help="encodes the latents on the first rung")
    sampling = questions.add_parser("sampling", help="one V2T translation by the pipeline, rung by rung")
    sampling.add_argument("--model", default="v2t-roadscene", help="a V2T model: shipped name or folder")
    sampling.add_argument("--resolution", type=int, default=256)
    sampling.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64])
    sampling.add_argument("--steps", type=int, default=20)
    sampling.add_argument("--guidance", type=float, default=1.5, help="above 1: two UNet passes a step")
    sampling.add_argument("--repeats", type=int, default=5)
    for question in (training, sampling):
        question.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
        question.add_argument("--results", type=Path, default=RESULTS, help="the JSON-lines file rows go to")
    args = parser.parse_args(argv)

    if args.question == "training":
        from thermosynth.training.config import PRESETS

        args.architecture = PRESETS[args.task][args.preset]["architecture"]
        ladder, unit = climb(TRAINING_RUNGS), "ms per step"
        cases = [({"task": args.task, "preset": args.preset, "architecture": args.architecture,
                   "resolution": args.resolution, "batch_size": args.batch_size, "timed_steps": args.steps},
                  lambda settings: training_rung(args, settings))]
    else:
        from thermosynth.pipelines import load_pipeline, prepare_for_inference

        pipeline = prepare_for_inference(load_pipeline(args.model), args.device, "ddim", "fp32")
        ladder, unit = climb(SAMPLING_RUNGS), "ms per translation"
        cases = [({"task": "v2t", "model": args.model, "resolution": args.resolution, "batch_size": batch,
                   "steps": args.steps, "guidance": args.guidance},
                  lambda settings, batch=batch: sampling_rung(args, settings, pipeline, batch))
                 for batch in args.batch_sizes]
    for case, measure in cases:
        print(f"\n{args.question}: {case}")
        rows = []
        for name, settings in ladder:
            measured = [r for r in rows if r["seconds"] is not None]  # a rung out of memory is skipped over
            try:
                seconds, first = measure(settings)
            except torch.OutOfMemoryError:  # e.g. classic attention at 512 px: the rung's finding, not the run's end
                row = {"seconds": None, "first_call_s": None, "error": "out of memory"}
            else:
                row = {"seconds": round(seconds, 5), "first_call_s": round(first, 2),
                       "speedup_previous": round(measured[-1]["seconds"] / seconds, 3) if measured else 1.0,
                       "speedup_first": round(measured[0]["seconds"] / seconds, 3) if measured else 1.0,
                       "images_per_s": round(case["batch_size"] / seconds, 3)}
            rows.append(record(args.results, {"question": f"{args.question} optimisations", **case, "rung": name,
                                              "settings": settings, **row}, args.device))
            if args.device.startswith("cuda"):
                torch.cuda.empty_cache()
        print_table(rows, unit)


if __name__ == "__main__":
    main()
