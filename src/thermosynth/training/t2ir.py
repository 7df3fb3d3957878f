"""Training TxT2IR's text-to-infrared LDM, with its thermal-mask loss made to train.

    L = ||eps - eps_hat||^2 + lambda * mean(|x0 - D(z0_hat)| * M)
    z0_hat = (z_t - sqrt(1 - abar_t) eps_hat) / sqrt(abar_t)

(TxT2IR Eq. 4, with noise prediction. With velocity prediction the first term is ||v - v_hat||^2 and
z0_hat = sqrt(abar_t) z_t - sqrt(1 - abar_t) v_hat, training/diffusion.py.)

M is `hot_weight` on the hot pixels of the real image x0 and `cold_weight` elsewhere. The public TxT2IR code
computes the second term without gradients, so it never trains; here the frozen decoder D stays in the graph, and
the gradient reaches the UNet through z0_hat (tests/test_t2ir.py checks it).

Whole images are fitted to `image_size` once, encoded once (latents cached), and their masks computed once; the
captions' token states are cached too (models.text_encoders.TextStateCache). Captions come from a metadata.jsonl
(`thermosynth caption`) or, for HIT-UAV / LLVIP, straight from their annotations.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DConditionModel
from diffusers.utils.torch_utils import randn_tensor
from tqdm.auto import tqdm

from thermosynth.data.augment import fit_to_size
from thermosynth.data.captions import METADATA_FILE, caption_hituav, caption_llvip, read_metadata
from thermosynth.data.errors import DataError
from thermosynth.data.images import read_thermal
from thermosynth.data.masks import HotMaskSpec, hot_mask, mask_weights
from thermosynth.data.normalization import ThermalNormalization
from thermosynth.data.sources import Box, read_voc_boxes
from thermosynth.distributed import process_state
from thermosynth.models.configs import build_t2ir_unet
from thermosynth.models.latent_codec import LatentCodec
from thermosynth.models.stable_diffusion import add_lora, load_unet, save_trained_pipeline
from thermosynth.models.stable_diffusion import load_text_encoder as load_pretrained_text_encoder
from thermosynth.models.text_encoders import (
    TextStateCache,
    hidden_size,
    load_text_encoder,
    stretch_clip_positions,
)
from thermosynth.pipelines.text_to_thermal import TextToThermalPipeline
from thermosynth.render import image_grid, tensor_to_rgb
from thermosynth.training.autoencoder import init_from_autoencoder, load_autoencoder
from thermosynth.training.config import T2IRTrainConfig
from thermosynth.training.diffusion import noise_schedule, predicted_x0, prediction_target
from thermosynth.training.loop import TrainingTask, train_with

logger = logging.getLogger(__name__)


def compute_loss(
    unet: UNet2DConditionModel,
    vae: AutoencoderKL,
    batch: dict[str, torch.Tensor],
    scheduler: DDPMScheduler,
    generator: torch.Generator,
    mask_loss_weight: float,
    mask_t_max: int,
    mask_samples: int,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The diffusion MSE (of the noise, or of the velocity under a v-prediction schedule) plus the thermal-mask term
    for the samples with t <= mask_t_max, estimated from at most `mask_samples` of them.

    batch: latent (B, 4, h, w) scaled, thermal (B, 1, H, W) in [-1, 1], weights (B, 1, H, W), text_states
    (B, L, D), text_mask (B, L).
    """
    latents = batch["latent"]
    size = latents.shape[0]
    noise = randn_tensor(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (size,), generator=generator).to(latents.device)
    noisy = scheduler.add_noise(latents, noise, timesteps)
    prediction = unet(noisy, timesteps, encoder_hidden_states=batch["text_states"],
                      encoder_attention_mask=batch["text_mask"]).sample
    target = prediction_target(scheduler, latents, noise, timesteps)
    diffusion_loss = F.mse_loss(prediction.float(), target.float())
    extras = {"diffusion_mse": diffusion_loss.item()}
    if mask_loss_weight == 0:
        return diffusion_loss, extras

    selected = torch.nonzero(timesteps <= mask_t_max).flatten()
    if len(selected) == 0:
        return diffusion_loss, {**extras, "mask_l1": float("nan")}
    # Decoding with gradients through D costs more than the UNet's step (2.5x a step at batch 32 on the H100,
    # benchmarks/perf/RESULTS.md): decode a random few and scale their sum by selected / decoded, so that the term's
    # expectation over this draw is Eq. 4's over every selected sample; only its variance grows.
    decoded = selected
    if len(selected) > mask_samples:
        decoded = selected[torch.randperm(len(selected), generator=generator)[:mask_samples].to(selected.device)]
    z0 = predicted_x0(noisy[decoded], prediction[decoded], timesteps[decoded], scheduler)
    x0_hat = LatentCodec(vae).decode_thermal(z0, clamp=False)  # as the pipelines read it; gradient flows through D
    per_sample = ((batch["thermal"][decoded] - x0_hat).abs() * batch["weights"][decoded]).mean(dim=(1, 2, 3))
    # Divided by the whole batch, so a sample's weight does not depend on how many others fall under t_max.
    mask_term = per_sample.sum() * (len(selected) / len(decoded)) / size
    return diffusion_loss + mask_loss_weight * mask_term, {**extras, "mask_l1": per_sample.mean().item()}


@dataclass
class CaptionedThermal:
    raw: np.ndarray  # (H, W) uint8/uint16 at the training size
    captions: list[str]
    boxes: list  # data.sources.Box, already scaled to the training size


def _captioned_files(path: Path, split: str | None) -> list[tuple[Path, list[str], Path | None]]:
    """(image, captions, VOC annotation or None) from a metadata.jsonl, else from HIT-UAV / LLVIP annotations."""
    for candidate in (path, path / "JPEGImages", path / "infrared"):
        if (candidate / METADATA_FILE).is_file():
            items = read_metadata(candidate, split)
            break
    else:
        if (path / "JPEGImages").is_dir():
            entries = caption_hituav(path, path)
        elif (path / "infrared").is_dir():
            entries = caption_llvip(path, path)
        else:
            raise DataError(f"{path}: no metadata.jsonl and no annotations to caption from. Write captions with "
                            "`thermosynth caption` first.")
        items = [(path / e["file_name"], e["text"]) for e in entries if split is None or e.get("split") == split]
    annotations = path / "Annotations"
    return [(image, captions, annotations / f"{image.stem}.xml" if (annotations / f"{image.stem}.xml").is_file()
             else None) for image, captions in items]


def load_captioned(
    paths: list[str], split: str | None, size: tuple[int, int], skip_bad: bool
) -> list[CaptionedThermal]:
    items = []
    for path in map(Path, paths):
        files = _captioned_files(path, split)
        for image_path, captions, annotation in tqdm(files, desc=f"read {path.name}", leave=False):
            try:
                raw = read_thermal(image_path)
            except DataError as error:
                if not skip_bad:
                    raise
                logger.warning("skipped: %s", error)
                continue
            fitted, (sx, sy, ox, oy) = fit_to_size(raw, size)
            boxes = []
            if annotation is not None:
                boxes = [Box(b.label, b.xmin * sx + ox, b.ymin * sy + oy, b.xmax * sx + ox, b.ymax * sy + oy)
                         for b in read_voc_boxes(annotation)]
            items.append(CaptionedThermal(fitted, captions, boxes))
        logger.info("%s: %d captioned thermal images", path, len(items))
    if not items:
        raise DataError(f"no captioned thermal images in {paths} (split {split!r}).")
    return items


def thermal_weights(item: CaptionedThermal, config: T2IRTrainConfig) -> np.ndarray:
    """M for one training image: hot pixels (optionally only inside its boxes) weigh hot_weight, the rest cold."""
    spec = HotMaskSpec(config.mask_method, config.mask_percentile)
    hot = hot_mask(item.raw, spec, item.boxes if config.mask_in_boxes else ())
    return mask_weights(hot, config.hot_weight, config.cold_weight)


class CaptionedLatents:
    """Everything per image that training needs, prepared once: latent, thermal pixels, mask weights, captions."""

    def __init__(self, items: list[CaptionedThermal], vae: AutoencoderKL, normalization: ThermalNormalization,
                 config: T2IRTrainConfig):
        self.captions = [item.captions for item in items]
        self.thermal, self.weights, self.latents = [], [], []
        codec = LatentCodec(vae)
        with torch.no_grad():
            for item in tqdm(items, desc="encode latents", leave=False):
                value_range = normalization.range_of(item.raw)
                thermal = torch.from_numpy(normalization.normalize(item.raw, value_range))[None]  # (1, H, W)
                self.thermal.append(thermal)
                self.weights.append(torch.from_numpy(thermal_weights(item, config))[None])
                self.latents.append(codec.encode(thermal[None]).float().cpu()[0])

    def __len__(self) -> int:
        return len(self.latents)

    def sample(self, batch_size: int, condition_dropout: float, generator: torch.Generator):
        indices = torch.randint(len(self), (batch_size,), generator=generator).tolist()
        prompts = []
        for index in indices:
            u = torch.rand(2, generator=generator).tolist()
            captions = self.captions[index]
            prompts.append("" if u[0] < condition_dropout else captions[int(u[1] * len(captions))])
        batch = {"latent": torch.stack([self.latents[i] for i in indices]),
                 "thermal": torch.stack([self.thermal[i] for i in indices]),
                 "weights": torch.stack([self.weights[i] for i in indices])}
        return batch, prompts


def build_task(config: T2IRTrainConfig) -> TrainingTask:
    device = process_state().device  # the frozen parts sit where this process trains
    items = load_captioned(config.data.paths, config.data.split, config.image_size, config.data.skip_bad)
    if config.init_from:
        vae, normalization = init_from_autoencoder(config, [item.raw for item in items])
        own_text_encoder = config.text_encoder == config.init_from
        if own_text_encoder:
            tokenizer, text_encoder = load_pretrained_text_encoder(config.init_from)
            if config.long_clip:
                stretch_clip_positions(text_encoder, tokenizer)
        else:
            tokenizer, text_encoder = load_text_encoder(config.text_encoder, config.long_clip)
        torch.manual_seed(config.seed)  # a new text projection and the adapters' A matrices are drawn at random
        unet = load_unet(config.init_from, None if own_text_encoder else hidden_size(text_encoder))
        if config.lora_rank:
            add_lora(unet, config.lora_rank, train_conv_in=False)
        scheduler = DDPMScheduler.from_pretrained(config.init_from, subfolder="scheduler")  # what the UNet learnt
        logger.info("t2ir from %s: its VAE and the text encoder (%s) frozen, its UNet fine-tuned%s", config.init_from,
                    "its own" if own_text_encoder else config.text_encoder,
                    "" if own_text_encoder else f" with a new {hidden_size(text_encoder)}-d text projection")
    else:
        vae, normalization = load_autoencoder(config.autoencoder)
        tokenizer, text_encoder = load_text_encoder(config.text_encoder, config.long_clip)
        scheduler = noise_schedule(config.num_train_timesteps, config.prediction_type)
        torch.manual_seed(config.seed)
        unet = build_t2ir_unet(config.architecture, hidden_size(text_encoder), vae.config.latent_channels)
    vae.to(device)
    text_encoder.to(device)
    if config.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    if config.compile_unet:  # in place: the parameters, their names and the EMA's view of them stay
        unet.compile()
    if config.decoder_checkpointing:
        vae.enable_gradient_checkpointing()
    multiple = LatentCodec(vae).size_multiple(unet)
    if any(side % multiple for side in config.image_size):
        raise ValueError(f"image_size must be multiples of {multiple} for this autoencoder and UNet, got "
                         f"{config.image_size}")
    data = CaptionedLatents(items, vae, normalization, config)
    text_states = TextStateCache(tokenizer, text_encoder, ["", *(c for captions in data.captions for c in captions)])
    logger.info("t2ir data: %d images, %d captions (%d distinct)", len(data), sum(len(c) for c in data.captions),
                len(text_states) - 1)
    validation_prompts = [data.captions[i][0] for i in np.linspace(0, len(data) - 1, 4).round().astype(int)]

    def pipeline_for(model: UNet2DConditionModel) -> TextToThermalPipeline:
        sampler = DDIMScheduler.from_config(scheduler.config, timestep_spacing="trailing")
        return TextToThermalPipeline(vae, model, sampler, text_encoder, tokenizer,
                                     thermal_normalization=normalization.to_dict(),
                                     image_size=list(config.image_size))

    def draw_batch(generator):
        batch, prompts = data.sample(config.batch_size, config.condition_dropout, generator)
        states, mask = text_states(prompts)
        return {**batch, "text_states": states, "text_mask": mask}

    def loss(model, batch, generator):
        return compute_loss(model, vae, batch, scheduler, generator, config.mask_loss_weight, config.mask_t_max,
                            config.mask_samples)

    def validate(model, grid_path):
        pipeline = pipeline_for(model)
        pipeline.set_progress_bar_config(disable=True)
        made = pipeline(validation_prompts, num_inference_steps=config.validation_inference_steps,
                        generator=torch.Generator().manual_seed(config.seed), output_type="pt").images
        image_grid([[tensor_to_rgb(m) for m in made]]).save(grid_path)
        return {"generated_mean": made.mean().item(), "generated_std": made.std().item()}

    def export(model, folder):
        save_trained_pipeline(pipeline_for, model, folder)

    return TrainingTask(config, unet, draw_batch, loss, validate, export, export_name="pipeline")


def train(config: T2IRTrainConfig) -> Path:
    """Train the text-to-infrared LDM described by `config`; returns the exported pipeline folder."""
    return train_with(config, build_task)
