"""Which loss removes the maze texture of the shipped decoder? A short fine-tuning of the decoder alone (encoder
frozen) on 2 CPU cores, validated every 5 (or 10) minutes on the 16 RoadScene validation pairs' thermal images at full
size: SSIM (scikit-image's, Gaussian window, sigma 1.5) and PSNR of the round trip, and a grid to look at.

A standalone loop (not `thermosynth train`, whose `decoder.py` run came after): bf16 autocast, channels_last, AdamW,
a fast EMA (0.05 a step) of the decoder that is validated, and with `--adversarial-weight` pix2pix's PatchGAN on the
thermal channel (mean of the three decoded ones), its own AdamW (2e-4, beta1 0.5).

    python benchmarks/shipped/decoder_ablation.py OUT --minutes 30 --ssim-weight 0.2 --adversarial-weight 0.05

Run from the checkout with `recipe.py prepare`'s copy in .shipped/data. Results: RESULTS.md, "The decoder".
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch
from decoder import round_trip  # this folder's script (on sys.path when run as a script)
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from thermosynth.data.augment import CropSpec
from thermosynth.data.datasets import AutoencoderImages
from thermosynth.data.loading import load_autoencoder_arrays
from thermosynth.models.pix2pix import PatchDiscriminator
from thermosynth.pipelines import load_pipeline
from thermosynth.render import image_grid, tensor_to_rgb
from thermosynth.training.adversarial import adversarial_losses
from thermosynth.training.autoencoder import compute_loss as autoencoder_loss
from thermosynth.training.autoencoder import load_normalization, ssim

ROOT = Path(__file__).resolve().parents[2]


@torch.no_grad()
def validate(vae, val: list[torch.Tensor], out: Path, tag: str) -> dict:
    vae.eval()
    ssims, psnrs, made = [], [], []
    for x in val:
        y = round_trip(vae, x)
        a, b = (x[0, 0].numpy() + 1) * 127.5, (y[0, 0].numpy() + 1) * 127.5
        ssims.append(structural_similarity(a, b, data_range=255, gaussian_weights=True, sigma=1.5,
                                           use_sample_covariance=False))
        psnrs.append(peak_signal_noise_ratio(a, b, data_range=255))
        made.append(y)
    row = {"tag": tag, "ssim": float(np.mean(ssims)), "psnr": float(np.mean(psnrs))}
    print(row, flush=True)
    image_grid([[tensor_to_rgb(v[0]) for v in val[i : i + 4]] + [tensor_to_rgb(m[0]) for m in made[i : i + 4]]
                for i in (0, 4, 8, 12)]).save(out / f"val-{tag}.png")
    vae.train()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--minutes", type=float, required=True)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--crop-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--ssim-weight", type=float, default=1.0)
    parser.add_argument("--adversarial-weight", type=float, default=0.0)
    parser.add_argument("--validate-every", type=float, default=5.0, help="minutes")
    args = parser.parse_args()
    torch.set_num_threads(2)
    args.out.mkdir(parents=True, exist_ok=True)
    shipped = ROOT / "src" / "thermosynth" / "pretrained" / "autoencoder"
    normalization = load_normalization(shipped)
    data = ROOT / ".shipped" / "data"
    thermal, _ = load_autoencoder_arrays([str(data / "roadscene"), str(data / "hit-uav")], "train", False, None)
    images = AutoencoderImages(thermal, [], normalization, 1.0)
    val_raw, _ = load_autoencoder_arrays([str(data / "roadscene")], "val", False, None)
    val = [torch.from_numpy(normalization.normalize(r))[None, None] for r in val_raw]

    vae = load_pipeline("v2t-roadscene").vae.float()
    log = [validate(vae, val, args.out, "step0")]
    vae.requires_grad_(False)
    vae.decoder.requires_grad_(True)
    vae.post_quant_conv.requires_grad_(True)
    vae = vae.to(memory_format=torch.channels_last).train()
    params = [p for p in vae.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    discriminator = PatchDiscriminator(in_channels=1).to(memory_format=torch.channels_last)
    optimizer_d = torch.optim.AdamW(discriminator.parameters(), lr=2e-4, betas=(0.5, 0.999), weight_decay=0.0)
    generator = torch.Generator().manual_seed(0)

    def loss_of(x):
        if not args.adversarial_weight:
            return autoencoder_loss(vae, x, generator, args.ssim_weight, 0.0)[0]
        posterior = vae.encode(x).latent_dist
        made = vae.decode(posterior.sample(generator)).sample.float()
        loss_d, adversarial = adversarial_losses(discriminator, x[:, :1], made.mean(1, keepdim=True))
        reconstruction = (made - x).abs().mean() + args.ssim_weight * (1 - ssim(made, x))
        return reconstruction + args.adversarial_weight * adversarial + loss_d

    ema = copy.deepcopy(vae).eval()
    crop, started, step, next_validation = CropSpec(args.crop_size), time.time(), 0, args.validate_every
    while time.time() - started < args.minutes * 60:
        x = images.sample(args.batch_size, crop, generator).to(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = loss_of(x)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        for opt in (optimizer, optimizer_d):
            opt.step()
            opt.zero_grad()
        step += 1
        with torch.no_grad():
            for part in ("decoder", "post_quant_conv"):
                for kept, trained in zip(getattr(ema, part).parameters(), getattr(vae, part).parameters(),
                                         strict=True):
                    kept.lerp_(trained, 0.05)
        if (time.time() - started) / 60 >= next_validation:
            log.append(validate(ema, val, args.out, f"min{next_validation:g}-step{step}"))
            next_validation += args.validate_every
    log.append(validate(ema, val, args.out, f"final-step{step}"))
    (args.out / "log.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "log": log},
                                                  indent=1) + "\n")


if __name__ == "__main__":
    main()
