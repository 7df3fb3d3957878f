"""Training LaPIG's visible-to-thermal LDM (Sec. 3.4) on a frozen autoencoder.

Latents of every training image (and of its mirror image) are encoded once and cropped per draw: the autoencoder
then costs nothing per step, which doubled the UNet steps per minute in our calibration runs (DESIGN.md).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DModel
from diffusers.utils.torch_utils import randn_tensor
from tqdm.auto import tqdm

from thermosynth.data.augment import center_crop
from thermosynth.data.datasets import PairedImages
from thermosynth.data.loading import load_paired_arrays
from thermosynth.distributed import process_state
from thermosynth.models.configs import build_v2t_unet
from thermosynth.models.latent_codec import LatentCodec, as_codec_input, v2t_unet_input
from thermosynth.models.stable_diffusion import (
    add_lora,
    empty_prompt_embedding,
    load_v2t_unet,
    save_trained_pipeline,
    v2t_prediction,
)
from thermosynth.pipelines.visible_to_thermal import VisibleToThermalPipeline
from thermosynth.training.autoencoder import init_from_autoencoder, load_autoencoder
from thermosynth.training.config import V2TTrainConfig
from thermosynth.training.diffusion import noise_schedule, prediction_target
from thermosynth.training.loop import TrainingTask, train_with
from thermosynth.training.validation import validate_translation

logger = logging.getLogger(__name__)


def compute_loss(
    unet: UNet2DModel,
    batch: dict[str, torch.Tensor],
    scheduler: DDPMScheduler,
    generator: torch.Generator,
    condition_dropout: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """MSE of the UNet's prediction (noise, or velocity for a v-prediction schedule) given cat(noisy thermal latent,
    visible latent); the condition is zeroed with probability `condition_dropout` so that the same network also
    learns the unconditional model (for CFG)."""
    target = batch["thermal_latent"]  # (B, 4, h, w)
    condition = batch["visible_latent"]  # (B, 4, h, w)
    size = target.shape[0]
    noise = randn_tensor(target.shape, generator=generator, device=target.device, dtype=target.dtype)
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (size,), generator=generator).to(target.device)
    keep = (torch.rand(size, generator=generator) >= condition_dropout).to(target.device, target.dtype)
    noisy = scheduler.add_noise(target, noise, timesteps)
    unet_input = v2t_unet_input(noisy, condition * keep.view(size, 1, 1, 1))
    prediction = v2t_prediction(unet, unet_input, timesteps, batch.get("prompt_states"))
    loss = F.mse_loss(prediction.float(), prediction_target(scheduler, target, noise, timesteps).float())
    return loss, {}


class LatentPairs:
    """Scaled latents of whole pairs and their mirror images, cropped at random per draw."""

    def __init__(self, pairs: PairedImages, vae: AutoencoderKL, min_size: int):
        self.visible: list[torch.Tensor] = []
        self.thermal: list[torch.Tensor] = []
        codec = LatentCodec(vae)
        with torch.no_grad():
            for index in tqdm(range(len(pairs)), desc="encode latents", leave=False):
                visible, thermal = pairs.pair(index)
                image = torch.cat([visible, thermal])[None]  # (1, 4, H, W): resized and mirrored together
                image = _fit_for_encoding(image, min_size, codec.downsampling)
                for flipped in (image, image.flip(-1)):
                    both = torch.cat([flipped[:, :3], as_codec_input(flipped[:, 3:])])  # one batch: (2, 3, H, W)
                    latents = codec.encode(both).float().cpu()  # (2, C, h, w)
                    self.visible.append(latents[0])
                    self.thermal.append(latents[1])

    def sample(self, batch_size: int, size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        visible, thermal = [], []
        for index in torch.randint(len(self.visible), (batch_size,), generator=generator).tolist():
            _, height, width = self.visible[index].shape
            top = int(torch.randint(height - size + 1, (1,), generator=generator))
            left = int(torch.randint(width - size + 1, (1,), generator=generator))
            visible.append(self.visible[index][:, top : top + size, left : left + size])
            thermal.append(self.thermal[index][:, top : top + size, left : left + size])
        return {"visible_latent": torch.stack(visible), "thermal_latent": torch.stack(thermal)}


def _fit_for_encoding(image: torch.Tensor, min_size: int, multiple: int) -> torch.Tensor:
    """Upscale images smaller than a crop, then trim to a multiple of the codec's downsampling so latents align
    with pixels."""
    height, width = image.shape[2:]
    if min(height, width) < min_size:
        factor = min_size / min(height, width)
        height, width = max(min_size, round(height * factor)), max(min_size, round(width * factor))
        image = F.interpolate(image, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return image[:, :, : height // multiple * multiple, : width // multiple * multiple]


def build_task(config: V2TTrainConfig) -> TrainingTask:
    data = config.data
    arrays = load_paired_arrays(data.paths, data.split, data.skip_bad, data.max_side)
    device = process_state().device  # the frozen parts sit where this process trains
    if config.init_from:
        vae, normalization = init_from_autoencoder(config, [t for _, t in arrays])
        unet, prompt = load_v2t_unet(config.init_from), empty_prompt_embedding(config.init_from).to(device)
        if config.lora_rank:
            torch.manual_seed(config.seed)  # the adapters' A matrices are drawn at random
            add_lora(unet, config.lora_rank, train_conv_in=True)
        # the pretrained UNet learnt its noise schedule and prediction type (in the config already): keep them
        scheduler = DDPMScheduler.from_pretrained(config.init_from, subfolder="scheduler")
        logger.info("v2t from %s: its VAE frozen, its UNet widened to %d input channels (%s)", config.init_from,
                    unet.config.in_channels, config.prediction_type)
    else:
        vae, normalization = load_autoencoder(config.autoencoder)
        torch.manual_seed(config.seed)
        unet, prompt = build_v2t_unet(config.architecture, vae.config.latent_channels), None
        scheduler = noise_schedule(config.num_train_timesteps, config.prediction_type)
    if config.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    if config.compile_unet:  # in place: the parameters, their names and the EMA's view of them stay
        unet.compile()
    vae.to(device)
    codec = LatentCodec(vae)
    multiple = codec.size_multiple(unet)
    if config.crop_size % multiple:
        raise ValueError(f"crop_size must be a multiple of {multiple} for this autoencoder and UNet, got "
                         f"{config.crop_size}")
    pairs = PairedImages(arrays, normalization)
    latents = LatentPairs(pairs, vae, config.crop_size)
    latent_size = config.crop_size // codec.downsampling
    logger.info("v2t data: %d pairs (%d latent pairs with mirrors)", len(pairs), len(latents.visible))
    # Validation on fixed centre crops of the first training pairs: a progress picture, not a test-set metric.
    shown = [pairs.pair(i) for i in range(min(4, len(pairs)))]
    val_visible = [center_crop(v, 2 * config.crop_size) for v, _ in shown]
    val_thermal = [center_crop(t, 2 * config.crop_size) for _, t in shown]

    def pipeline_for(model: UNet2DModel) -> VisibleToThermalPipeline:
        sampler = DDIMScheduler.from_config(scheduler.config, timestep_spacing="trailing")
        return VisibleToThermalPipeline(vae, model, sampler, prompt_embedding=prompt,
                                        thermal_normalization=normalization.to_dict())

    def draw_batch(generator):
        batch = latents.sample(config.batch_size, latent_size, generator)
        if prompt is not None:
            batch["prompt_states"] = prompt(config.batch_size)
        return batch

    def loss(model, batch, generator):
        return compute_loss(model, batch, scheduler, generator, config.condition_dropout)

    def validate(model, grid_path):
        return validate_translation(pipeline_for(model), val_visible, val_thermal, grid_path,
                                    num_inference_steps=config.validation_inference_steps,
                                    generator=torch.Generator().manual_seed(config.seed))

    def export(model, folder):
        save_trained_pipeline(pipeline_for, model, folder)

    return TrainingTask(config, unet, draw_batch, loss, validate, export, export_name="pipeline")


def train(config: V2TTrainConfig) -> Path:
    """Train the V2T LDM described by `config`; returns the exported pipeline folder (<run>/pipeline)."""
    return train_with(config, build_task)
