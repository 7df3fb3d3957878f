"""Training the autoencoder shared by thermal and visible images (LaPIG trains one AE for both), or fine-tuning the
decoder of one (thermosynth's own or a Stable Diffusion VAE) with its encoder frozen, so that the latents UNets were
trained on stay what they were."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from diffusers import AutoencoderKL
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torchmetrics.functional.image import structural_similarity_index_measure

from thermosynth.data.augment import CropSpec
from thermosynth.data.datasets import AutoencoderImages
from thermosynth.data.loading import fit_normalization, load_autoencoder_arrays
from thermosynth.data.normalization import ThermalNormalization
from thermosynth.models.configs import build_autoencoder
from thermosynth.models.pix2pix import PatchDiscriminator
from thermosynth.models.stable_diffusion import load_vae, trainable_decoder
from thermosynth.render import image_grid, tensor_to_rgb
from thermosynth.training.adversarial import adversarial_losses
from thermosynth.training.config import AutoencoderTrainConfig
from thermosynth.training.loop import TrainingTask, train_with

logger = logging.getLogger(__name__)

# Written beside the diffusers files of an exported autoencoder; every model trained on top reads it.
THERMOSYNTH_FILE = "thermosynth.json"


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """SSIM of [-1, 1] images (Gaussian window 11, sigma 1.5), differentiable."""
    return structural_similarity_index_measure((a.float() + 1) / 2, (b.float() + 1) / 2, data_range=1.0)


def compute_loss(
    vae: AutoencoderKL, images: torch.Tensor, generator: torch.Generator, ssim_weight: float, kl_weight: float,
    discriminator: torch.nn.Module | None = None, adversarial_weight: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """L1 + ssim_weight * (1 - SSIM) + kl_weight * KL for a batch (B, 3, H, W) in [-1, 1]; with a `discriminator`,
    plus adversarial_weight * its generator term and its own loss, which trains only it (training/adversarial.py)."""
    posterior = vae.encode(images).latent_dist
    reconstruction = vae.decode(posterior.sample(generator)).sample
    l1 = (reconstruction.float() - images).abs().mean()
    structural = ssim(reconstruction, images)
    kl = posterior.kl().mean()
    loss = l1 + ssim_weight * (1 - structural) + kl_weight * kl
    logged = {"l1": l1.item(), "ssim": structural.item(), "kl": kl.item()}
    if discriminator is not None:
        loss_d, adversarial = adversarial_losses(discriminator, images, reconstruction)
        loss = loss + adversarial_weight * adversarial + loss_d
        logged.update(loss_d=loss_d.item(), adversarial=adversarial.item())
    return loss, logged


class AutoencoderWithDiscriminator(ModelMixin, ConfigMixin):
    """The autoencoder and the PatchGAN (pix2pix's) that judges its reconstructions, as the one module the loop
    trains, so that its optimizer, EMA and checkpoints hold both and a resumed run replays exactly. Only `vae` is
    exported. Without the adversarial term, what the latent cannot hold (asphalt grain, foliage) comes back blurred
    under L1, and as a maze-like texture under SSIM, which rewards local contrast wherever it is
    (benchmarks/shipped/RESULTS.md, "The decoder")."""

    @register_to_config
    def __init__(self, base_channels: int = 64, num_layers: int = 3):
        super().__init__()
        self.discriminator = PatchDiscriminator(in_channels=3, base_channels=base_channels, num_layers=num_layers)
        self.vae: AutoencoderKL | None = None  # attached by `around`

    @classmethod
    def around(cls, vae: AutoencoderKL) -> AutoencoderWithDiscriminator:
        model = cls()
        model.vae = vae
        return model


def is_own_autoencoder(folder: str | Path) -> bool:
    """An autoencoder exported by thermosynth (diffusers' files and thermosynth.json), not a Stable Diffusion."""
    return (Path(folder) / THERMOSYNTH_FILE).is_file() and (Path(folder) / "config.json").is_file()


def load_autoencoder(folder: str | Path) -> tuple[AutoencoderKL, ThermalNormalization]:
    """An autoencoder exported by thermosynth, frozen, with the thermal normalisation it was trained with."""
    normalization = load_normalization(Path(folder))
    return AutoencoderKL.from_pretrained(folder).eval().requires_grad_(False), normalization


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
    source_dir = Path(config.init_from or "")
    own = bool(config.init_from) and is_own_autoencoder(source_dir)
    if config.init_from and not own and source_dir.is_dir() and not (source_dir / "vae").is_dir():
        raise ValueError(f"{source_dir}: neither an autoencoder exported by thermosynth (config.json and "
                         f"{THERMOSYNTH_FILE}) nor a Stable Diffusion folder (vae/, unet/, ...). Give the "
                         "autoencoder/ folder of a `thermosynth train autoencoder` run, "
                         "src/thermosynth/pretrained/autoencoder, or a Stable Diffusion folder in diffusers' layout.")
    thermal, visible = load_autoencoder_arrays(data.paths, data.split, data.skip_bad, data.max_side)
    if own:  # its encoder reads images normalised as they were when it was trained
        source, normalization = load_autoencoder(source_dir)
    else:
        normalization = fit_normalization(thermal, data.thermal_normalization, data.thermal_range)
    images = AutoencoderImages(thermal, visible, normalization, config.thermal_fraction)
    crop = CropSpec(config.crop_size)
    logger.info("autoencoder data: %d thermal, %d visible images", len(thermal), len(visible))

    torch.manual_seed(config.seed)
    if config.init_from:
        vae = trainable_decoder(source if own else load_vae(config.init_from))
        logger.info("fine-tuning the decoder of %s on thermal crops; its encoder stays as it is",
                    config.init_from if own else f"{config.init_from}'s VAE")
    else:
        vae = build_autoencoder(config.architecture)
    model = AutoencoderWithDiscriminator.around(vae) if config.adversarial_weight else vae

    def vae_of(model) -> AutoencoderKL:
        return model.vae if config.adversarial_weight else model
    # Fixed validation crops (not from the training draws' stream): thermal ones first, then visible.
    fixed = torch.Generator().manual_seed(config.seed + 1)
    validation = images.sample(4, crop, fixed, thermal_fraction=1.0)
    if visible:
        validation = torch.cat([validation, images.sample(2, crop, fixed, thermal_fraction=0.0)])

    def draw_batch(generator):
        return {"images": images.sample(config.batch_size, crop, generator)}

    def loss(model, batch, generator):
        discriminator = model.discriminator if config.adversarial_weight else None
        return compute_loss(vae_of(model), batch["images"], generator, config.ssim_weight, config.kl_weight,
                            discriminator, config.adversarial_weight)

    def validate(model, grid_path):
        model = vae_of(model)
        x = validation.to(model.device)
        reconstruction = model.decode(model.encode(x).latent_dist.mode()).sample.clamp(-1, 1)
        image_grid([[tensor_to_rgb(i) for i in x], [tensor_to_rgb(r) for r in reconstruction]]).save(grid_path)
        return {"l1": (reconstruction - x).abs().mean().item(), "ssim": ssim(reconstruction, x).item()}

    def export(model, folder):
        model = vae_of(model)
        if not config.init_from:  # a fine-tuned decoder keeps the latents, and the scaling, the UNet learnt
            probe = images.sample(64, crop, torch.Generator().manual_seed(config.seed + 2)).to(model.device)
            model.register_to_config(scaling_factor=latent_scaling_factor(model, probe))
        model.save_pretrained(folder)
        (folder / THERMOSYNTH_FILE).write_text(json.dumps(
            {"thermal_normalization": normalization.to_dict(), "trained_on": data.paths,
             "decoder_fine_tuned_from": config.init_from}, indent=2))

    return TrainingTask(config, model, draw_batch, loss, validate, export, export_name="autoencoder")


def train(config: AutoencoderTrainConfig) -> Path:
    """Train the autoencoder described by `config`; returns the exported folder (<run>/autoencoder)."""
    return train_with(config, build_task)
