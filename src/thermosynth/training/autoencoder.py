"""Training the autoencoder shared by thermal and visible images (LaPIG trains one AE for both)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from diffusers import AutoencoderKL
from torchmetrics.functional.image import structural_similarity_index_measure

from thermosynth.data.augment import CropSpec
from thermosynth.data.datasets import AutoencoderImages
from thermosynth.data.loading import fit_normalization, load_autoencoder_arrays
from thermosynth.data.normalization import ThermalNormalization
from thermosynth.models.configs import build_autoencoder
from thermosynth.models.stable_diffusion import load_vae, trainable_decoder
from thermosynth.render import image_grid, tensor_to_rgb
from thermosynth.training.config import AutoencoderTrainConfig
from thermosynth.training.loop import TrainingTask, train_with

logger = logging.getLogger(__name__)

# Written beside the diffusers files of an exported autoencoder; every model trained on top reads it.
THERMOSYNTH_FILE = "thermosynth.json"


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """SSIM of [-1, 1] images (Gaussian window 11, sigma 1.5), differentiable."""
    return structural_similarity_index_measure((a.float() + 1) / 2, (b.float() + 1) / 2, data_range=1.0)


def compute_loss(
    vae: AutoencoderKL, images: torch.Tensor, generator: torch.Generator, ssim_weight: float, kl_weight: float
) -> tuple[torch.Tensor, dict[str, float]]:
    """L1 + ssim_weight * (1 - SSIM) + kl_weight * KL for a batch (B, 3, H, W) in [-1, 1]."""
    posterior = vae.encode(images).latent_dist
    reconstruction = vae.decode(posterior.sample(generator)).sample
    l1 = (reconstruction.float() - images).abs().mean()
    structural = ssim(reconstruction, images)
    kl = posterior.kl().mean()
    loss = l1 + ssim_weight * (1 - structural) + kl_weight * kl
    return loss, {"l1": l1.item(), "ssim": structural.item(), "kl": kl.item()}


def load_normalization(autoencoder_dir: Path) -> ThermalNormalization:
    path = Path(autoencoder_dir) / THERMOSYNTH_FILE
    if not path.is_file():
        raise ValueError(f"{path} is missing: {autoencoder_dir} is not an autoencoder exported by thermosynth")
    return ThermalNormalization.from_dict(json.loads(path.read_text())["thermal_normalization"])


@torch.no_grad()
def latent_scaling_factor(vae: AutoencoderKL, images: torch.Tensor) -> float:
    """1 / std of the latents, so the diffusion model sees unit-variance inputs (the SD convention)."""
    return float(1.0 / vae.encode(images).latent_dist.mode().float().std())


def init_from_autoencoder(config, thermal: list) -> tuple[AutoencoderKL, ThermalNormalization]:
    """The VAE and thermal normalisation of a V2T / T2IR run started `--init-from` a Stable Diffusion: its VAE as it
    is with a normalisation fitted to the run's thermal images, or (with `--autoencoder` too) the VAE whose decoder
    `train autoencoder --init-from` fine-tuned, with the normalisation it was fine-tuned with."""
    if config.autoencoder:
        return load_vae(config.init_from, config.autoencoder), load_normalization(Path(config.autoencoder))
    data = config.data
    return load_vae(config.init_from), fit_normalization(thermal, data.thermal_normalization, data.thermal_range)


def build_task(config: AutoencoderTrainConfig) -> TrainingTask:
    data = config.data
    thermal, visible = load_autoencoder_arrays(data.paths, data.split, data.skip_bad, data.max_side)
    normalization = fit_normalization(thermal, data.thermal_normalization, data.thermal_range)
    images = AutoencoderImages(thermal, visible, normalization, config.thermal_fraction)
    crop = CropSpec(config.crop_size)
    logger.info("autoencoder data: %d thermal, %d visible images", len(thermal), len(visible))

    torch.manual_seed(config.seed)
    if config.init_from:
        vae = trainable_decoder(config.init_from)
        logger.info("fine-tuning the decoder of %s's VAE on thermal crops; its encoder stays as it is",
                    config.init_from)
    else:
        vae = build_autoencoder(config.architecture)
    # Fixed validation crops (not from the training draws' stream): thermal ones first, then visible.
    fixed = torch.Generator().manual_seed(config.seed + 1)
    validation = images.sample(4, crop, fixed, thermal_fraction=1.0)
    if visible:
        validation = torch.cat([validation, images.sample(2, crop, fixed, thermal_fraction=0.0)])

    def draw_batch(generator):
        return {"images": images.sample(config.batch_size, crop, generator)}

    def loss(model, batch, generator):
        return compute_loss(model, batch["images"], generator, config.ssim_weight, config.kl_weight)

    def validate(model, grid_path):
        x = validation.to(model.device)
        reconstruction = model.decode(model.encode(x).latent_dist.mode()).sample.clamp(-1, 1)
        image_grid([[tensor_to_rgb(i) for i in x], [tensor_to_rgb(r) for r in reconstruction]]).save(grid_path)
        return {"l1": (reconstruction - x).abs().mean().item(), "ssim": ssim(reconstruction, x).item()}

    def export(model, folder):
        if not config.init_from:  # a fine-tuned decoder keeps the latents, and the scaling, the UNet learnt
            probe = images.sample(64, crop, torch.Generator().manual_seed(config.seed + 2)).to(model.device)
            model.register_to_config(scaling_factor=latent_scaling_factor(model, probe))
        model.save_pretrained(folder)
        (folder / THERMOSYNTH_FILE).write_text(json.dumps(
            {"thermal_normalization": normalization.to_dict(), "trained_on": data.paths,
             "decoder_fine_tuned_from": config.init_from}, indent=2))

    return TrainingTask(config, vae, draw_batch, loss, validate, export, export_name="autoencoder")


def train(config: AutoencoderTrainConfig) -> Path:
    """Train the autoencoder described by `config`; returns the exported folder (<run>/autoencoder)."""
    return train_with(config, build_task)
