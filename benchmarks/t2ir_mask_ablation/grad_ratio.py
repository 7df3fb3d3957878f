"""How strongly the thermal-mask term pushes the UNet, relative to the epsilon loss, on a trained mask-on run.

    python benchmarks/t2ir_mask_ablation/grad_ratio.py runs/t2ir-ablation/mask-on

Prints ||grad(total) - grad(eps-MSE)|| / ||grad(eps-MSE)|| over the UNet's parameters for 8 batches of 16
training images (captions, noise and timesteps drawn as in training; the decoder stays frozen).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

from thermosynth.models.text_encoders import encode_prompts, load_text_encoder
from thermosynth.training.autoencoder import load_normalization
from thermosynth.training.config import load_config
from thermosynth.training.diffusion import noise_schedule
from thermosynth.training.t2ir import CaptionedLatents, compute_loss, load_captioned


def unet_gradient(unet, loss) -> torch.Tensor:
    unet.zero_grad()
    loss.backward()
    return torch.cat([p.grad.flatten() for p in unet.parameters() if p.grad is not None])


def main(run: Path) -> None:
    config = load_config(run / "config.json")
    vae = AutoencoderKL.from_pretrained(config.autoencoder).eval().requires_grad_(False)
    unet = UNet2DConditionModel.from_pretrained(run / "pipeline" / "unet")
    tokenizer, text_encoder = load_text_encoder(config.text_encoder)
    items = load_captioned(config.data.paths, config.data.split, config.image_size, False)[:64]
    data = CaptionedLatents(items, vae, load_normalization(Path(config.autoencoder)), config)
    scheduler, ratios = noise_schedule(config.num_train_timesteps), []
    for seed in range(8):
        batch, prompts = data.sample(16, 0.0, torch.Generator().manual_seed(seed))
        batch["text_states"], batch["text_mask"] = encode_prompts(tokenizer, text_encoder, prompts)
        eps_only, total = (
            unet_gradient(unet, compute_loss(unet, vae, batch, scheduler, torch.Generator().manual_seed(100 + seed),
                                             weight, config.mask_t_max, 16)[0])  # all 16: the term, no estimate
            for weight in (0.0, config.mask_loss_weight)
        )
        ratios.append(((total - eps_only).norm() / eps_only.norm()).item())
    print("||grad mask term|| / ||grad eps term|| per batch:", [round(r, 3) for r in ratios])


if __name__ == "__main__":
    main(Path(sys.argv[1]))
