"""What decoding only a few samples for the thermal-mask term costs: how far the estimated gradient of a T2IR step
lies from the one that decodes every sample under t_max (training/t2ir.py, `mask_samples`).

    python benchmarks/t2ir_mask_ablation/estimate_noise.py .shipped/data/hit-uav --batches 4

On the shipped `t2ir-hituav` UNet (trained with the term over every sample) and `base`'s settings (256x320, t <= 500,
masks inside the boxes), for each of `--batches` training batches of `--batch-size`, the same captions, noise and
timesteps three times: without the term, with every selected sample decoded, and with `--mask-samples` of them.
Prints per batch, over the UNet's parameters:
- full mask / diffusion: ||g_full - g_diffusion|| / ||g_diffusion||, how strongly the term pushes at all;
- estimate error: ||g_estimate - g_full|| / ||g_full||, what the estimate changes in the step's whole gradient;
- batch to batch: ||g_full(this batch) - g_full(previous batch)|| / ||g_full||, the noise every SGD step has anyway.
"""

from __future__ import annotations

import argparse
import tempfile

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from grad_ratio import unet_gradient  # this folder's script (on sys.path when run as a script)

from thermosynth.models.text_encoders import encode_prompts, load_text_encoder
from thermosynth.pretrained import ROOT as SHIPPED
from thermosynth.training.autoencoder import load_normalization
from thermosynth.training.config import DataConfig, make_config
from thermosynth.training.diffusion import noise_schedule
from thermosynth.training.t2ir import CaptionedLatents, compute_loss, load_captioned


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", help="HIT-UAV (its train split), e.g. the recipe's prepared .shipped/data/hit-uav")
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--mask-samples", type=int, default=4)
    args = parser.parse_args()
    autoencoder = SHIPPED / "autoencoder"
    with tempfile.TemporaryDirectory() as work:
        config = make_config("t2ir", "base", output_dir=work, data=DataConfig(paths=[args.data], split="train"),
                             autoencoder=str(autoencoder), mask_in_boxes=True)
    vae = AutoencoderKL.from_pretrained(autoencoder, torch_dtype=torch.float32).eval().requires_grad_(False)
    unet = UNet2DConditionModel.from_pretrained(SHIPPED / "t2ir-hituav" / "unet", torch_dtype=torch.float32)
    tokenizer, text_encoder = load_text_encoder(config.text_encoder)
    items = load_captioned(config.data.paths, config.data.split, config.image_size, False)[: 4 * args.batch_size]
    data = CaptionedLatents(items, vae, load_normalization(autoencoder), config)
    scheduler = noise_schedule(config.num_train_timesteps, config.prediction_type)
    print("| batch | samples under t_max | full mask / diffusion | estimate error | batch to batch |")
    print("|---|---|---|---|---|")
    previous = None
    for index in range(args.batches):
        batch, prompts = data.sample(args.batch_size, 0.0, torch.Generator().manual_seed(index))
        batch["text_states"], batch["text_mask"] = encode_prompts(tokenizer, text_encoder, prompts)

        diffusion, full, estimate = (
            unet_gradient(unet, compute_loss(unet, vae, batch, scheduler, torch.Generator().manual_seed(100 + index),
                                        weight, config.mask_t_max, samples)[0])
            for weight, samples in ((0.0, args.batch_size), (config.mask_loss_weight, args.batch_size),
                                    (config.mask_loss_weight, args.mask_samples))
        )
        selected = int((torch.randint(0, config.num_train_timesteps, (args.batch_size,),
                                      generator=_after_noise(batch, 100 + index)) <= config.mask_t_max).sum())
        between = f"{((full - previous).norm() / full.norm()).item():.3f}" if previous is not None else ""
        print(f"| {index} | {selected} | {((full - diffusion).norm() / diffusion.norm()).item():.3f} | "
              f"{((estimate - full).norm() / full.norm()).item():.3f} | {between} |", flush=True)
        previous = full


def _after_noise(batch: dict, seed: int) -> torch.Generator:
    """The generator as compute_loss has it when it draws the timesteps (after the noise)."""
    generator = torch.Generator().manual_seed(seed)
    torch.randn(batch["latent"].shape, generator=generator)
    return generator


if __name__ == "__main__":
    main()
