"""Training the pix2pix baseline on the same data layer, loop and exports as the V2T LDM.

Generator and discriminator are updated together from one backward pass (training/adversarial.py): the
simultaneous-update form of the paper's alternating steps.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from thermosynth.data.augment import CropSpec, center_crop
from thermosynth.data.datasets import PairedImages
from thermosynth.data.loading import fit_normalization, load_paired_arrays
from thermosynth.models.pix2pix import Pix2PixPair, build_pix2pix
from thermosynth.pipelines.pix2pix import Pix2PixPipeline
from thermosynth.training.adversarial import adversarial_losses
from thermosynth.training.config import Pix2PixTrainConfig
from thermosynth.training.loop import TrainingTask, global_rng_from, train_with
from thermosynth.training.validation import validate_translation

logger = logging.getLogger(__name__)


def compute_loss(model: Pix2PixPair, batch: dict[str, torch.Tensor], l1_weight: float):
    """loss_D = (BCE(D(x, y), 1) + BCE(D(x, G(x)), 0)) / 2 and loss_G = BCE(D(x, G(x)), 1) + l1_weight * |G(x) - y|,
    returned as their sum; neither network receives gradient from the other's loss."""
    visible, thermal = batch["visible"], batch["thermal"]
    fake = model.generator(visible)
    loss_d, adversarial = adversarial_losses(model.discriminator, torch.cat([visible, thermal], dim=1),
                                             torch.cat([visible, fake], dim=1))
    l1 = (fake.float() - thermal.float()).abs().mean()
    loss_g = adversarial + l1_weight * l1
    return loss_g + loss_d, {"loss_d": loss_d.item(), "loss_g_gan": adversarial.item(), "l1": l1.item()}


def build_task(config: Pix2PixTrainConfig) -> TrainingTask:
    data = config.data
    arrays = load_paired_arrays(data.paths, data.split, data.skip_bad, data.max_side)
    if not arrays:
        raise ValueError(f"no training pairs found in {data.paths} (split {data.split!r})")
    normalization = fit_normalization([t for _, t in arrays], data.thermal_normalization, data.thermal_range)
    pairs = PairedImages(arrays, normalization)
    crop = CropSpec(config.crop_size)
    logger.info("pix2pix data: %d pairs", len(pairs))

    torch.manual_seed(config.seed)
    model = build_pix2pix(config.architecture)
    # Validation on fixed centre crops of the first training pairs: a progress picture, not a test-set metric.
    shown = [pairs.pair(i) for i in range(min(4, len(pairs)))]
    val_visible = [center_crop(v, 2 * config.crop_size) for v, _ in shown]
    val_thermal = [center_crop(t, 2 * config.crop_size) for _, t in shown]

    def pipeline_for(model: Pix2PixPair) -> Pix2PixPipeline:
        return Pix2PixPipeline(model.generator, thermal_normalization=normalization.to_dict())

    def draw_batch(generator):
        return pairs.sample(config.batch_size, crop, generator)

    def loss(model, batch, generator):
        with global_rng_from(generator, batch["visible"].device):  # the generator's dropout, replayable
            return compute_loss(model, batch, config.l1_weight)

    def validate(model, grid_path):
        return validate_translation(pipeline_for(model), val_visible, val_thermal, grid_path)

    def export(model, folder):
        pipeline_for(model).save_pretrained(folder)

    return TrainingTask(config, model, draw_batch, loss, validate, export, export_name="pipeline")


def train(config: Pix2PixTrainConfig) -> Path:
    """Train pix2pix as `config` describes; returns the exported pipeline folder (<run>/pipeline)."""
    return train_with(config, build_task)
