"""V2T sampling: latency at batch 1 and throughput at larger batches, thermosynth's pipeline against a plain diffusers
sampling loop on the same networks (issue 12).

    python benchmarks/perf/sampling.py                                  # the shipped v2t-roadscene, 256 px
    python benchmarks/perf/sampling.py --batch-sizes 1 --steps 20 --repeats 3   # the 2-core CPU figure
    python benchmarks/perf/sampling.py --dtype bf16 --compile reduce-overhead   # compiled UNet, CUDA graphs

For each batch size and step count: the wall time of one whole translation (encode the visible image, DDIM with
classifier-free guidance at the model card's scale, decode), median of --repeats after one untimed call, for
`VisibleToThermalPipeline` and for the loop a diffusers user writes with the same autoencoder, UNet and scheduler
(thermosynth's codec conventions, which the pipeline would not match otherwise, are the only thing they share). Both
in --dtype on --device. With --compile MODE the pipeline's UNet is torch.compiled (static shapes, so each batch size
compiles once, in the untimed first call, whose time is reported) while the plain loop runs the same UNet eagerly.
One JSON line per setting is appended to results.jsonl beside this script, with the machine, versions and command;
the table is printed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from common import RESULTS, record, timed
from plain_loops import translate

from thermosynth.pipelines import INFERENCE_DTYPES


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="v2t-roadscene", help="a V2T model: shipped name or folder")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 20, 50])
    parser.add_argument("--guidance", type=float, help="CFG scale (default: the model card's)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=tuple(INFERENCE_DTYPES), help="default: bf16 on CUDA, fp32 on the CPU")
    parser.add_argument("--compile", choices=("default", "reduce-overhead", "max-autotune"),
                        help="torch.compile the pipeline's UNet in this mode (reduce-overhead: CUDA graphs)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the JSON-lines file rows are appended to")
    args = parser.parse_args(argv)
    from thermosynth.pipelines import load_pipeline, prepare_for_inference
    from thermosynth.pipelines.common import sampling_settings

    dtype = args.dtype or ("bf16" if args.device.startswith("cuda") else "fp32")
    pipeline = prepare_for_inference(load_pipeline(args.model), args.device, "ddim", dtype)
    guidance = args.guidance if args.guidance is not None else sampling_settings(pipeline, None, None)[1]
    if args.compile:
        pipeline.unet.compile(mode=args.compile, dynamic=False)
    if guidance <= 1:
        guidance = 3.0  # the comparison is about guided sampling (two UNet passes a step)
    print("| batch | steps | thermosynth s | plain loop s | ratio | thermosynth images/s | first call s |\n"
          "|---|---|---|---|---|---|---|")
    for batch in args.batch_sizes:
        visible = torch.rand(batch, 3, args.resolution, args.resolution, device=args.device) * 2 - 1
        for steps in args.steps:
            def ours_call(visible=visible, steps=steps):
                return pipeline(visible, num_inference_steps=steps, guidance_scale=guidance, output_type="pt",
                                generator=torch.Generator().manual_seed(0))

            def reference_call(visible=visible, steps=steps):
                with torch.compiler.set_stance("force_eager"):  # the eager baseline, whatever --compile says
                    return translate(pipeline, visible.to(pipeline.unet.dtype), steps, guidance,
                                               torch.Generator(args.device).manual_seed(0))

            (ours, first), (reference, _) = (timed(ours_call, args.device, args.repeats),
                                             timed(reference_call, args.device, args.repeats))
            row = {"question": "v2t sampling", "model": args.model, "resolution": args.resolution, "batch_size": batch,
                   "steps": steps, "guidance": guidance, "dtype": dtype, "compile": args.compile,
                   "thermosynth_first_call_s": round(first, 3), "thermosynth_s": round(ours, 4),
                   "reference_s": round(reference, 4), "ratio": round(ours / reference, 3),
                   "thermosynth_images_per_s": round(batch / ours, 3)}
            record(args.results, row, args.device)
            print(f"| {batch} | {steps} | {ours:.3f} | {reference:.3f} | {row['ratio']:.2f} | "
                  f"{row['thermosynth_images_per_s']:.2f} | {first:.1f} |", flush=True)


if __name__ == "__main__":
    main()
