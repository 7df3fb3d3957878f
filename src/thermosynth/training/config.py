"""Typed training configs and their named presets.

A preset fills every field; the CLI may override a few (steps, batch size, learning rate, precision, seed). The
resolved config is written to ``<run>/config.json``; re-running the same command resumes that run.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from thermosynth.data.masks import COLD_WEIGHT, HOT_WEIGHT, HotMaskSpec
from thermosynth.data.normalization import MODES
from thermosynth.models.configs import (
    AUTOENCODER_ARCHITECTURES,
    FACE_UNET_ARCHITECTURES,
    T2IR_UNET_ARCHITECTURES,
    V2T_UNET_ARCHITECTURES,
)
from thermosynth.models.identity import ENCODERS
from thermosynth.models.pix2pix import PIX2PIX_ARCHITECTURES
from thermosynth.models.text_encoders import DEFAULT_TEXT_ENCODER

PRECISIONS = ("no", "bf16", "fp16")
PREDICTION_TYPES = ("epsilon", "v_prediction")


@dataclass
class DataConfig:
    paths: list[str] = field(default_factory=list)
    split: str | None = "train"
    skip_bad: bool = False
    max_side: int | None = None  # downscale images whose longer side exceeds this (None: native size)
    thermal_normalization: str = "fixed"  # fixed | dataset | percentile (see data/normalization.py)
    thermal_range: tuple[float, float] | None = None  # raw range for "fixed" (default: the full bit depth)

    def __post_init__(self):
        if self.thermal_normalization not in MODES:
            raise ValueError(f"thermal_normalization must be one of {MODES}, got {self.thermal_normalization!r}")
        if self.thermal_range is not None:
            self.thermal_range = tuple(self.thermal_range)
            if self.thermal_normalization != "fixed":
                raise ValueError("thermal_range is only used with thermal_normalization 'fixed'")


@dataclass
class TrainConfig:
    output_dir: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    architecture: str = "tiny"
    steps: int = 1000
    batch_size: int = 8
    crop_size: int = 128
    learning_rate: float = 1e-4
    warmup_steps: int = 100
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    max_grad_norm: float | None = 1.0  # None: no clipping
    gradient_accumulation_steps: int = 1
    mixed_precision: str = "no"
    adam_8bit: bool = False  # bitsandbytes' AdamW8bit: optimizer state in 8 bits (2 bytes a parameter, not 8)
    ema_decay: float = 0.999
    checkpoint_every: int = 500
    validate_every: int = 500
    log_every: int = 10
    keep_checkpoints: int = 2
    seed: int = 0
    # Wall-clock minutes of training: stop (checkpoint, export) when spent, with `steps` as an upper bound. The
    # learning-rate schedule then follows the elapsed fraction of the budget; the steps actually run are written
    # back into the run's config.json.
    time_budget: float | None = None

    def __post_init__(self):
        if isinstance(self.data, dict):
            self.data = DataConfig(**self.data)
        if not self.output_dir:
            raise ValueError("output_dir is required (the run folder)")
        if self.mixed_precision not in PRECISIONS:
            raise ValueError(f"mixed_precision must be one of {PRECISIONS}, got {self.mixed_precision!r}")
        for name in ("steps", "batch_size", "checkpoint_every", "validate_every", "log_every", "keep_checkpoints",
                     "gradient_accumulation_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.crop_size % 8:
            raise ValueError(f"crop_size must be a multiple of 8 (the autoencoder's factor), got {self.crop_size}")
        if self.time_budget is not None and not self.time_budget > 0:
            raise ValueError(f"time_budget must be > 0 minutes, got {self.time_budget}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        self._check_max_side()
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if not 0.0 <= self.adam_beta1 < 1.0:
            raise ValueError(f"adam_beta1 must be in [0, 1), got {self.adam_beta1}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be > 0 or None, got {self.max_grad_norm}")

    def _check_max_side(self) -> None:
        """Images downscaled below the crop size would have every crop upscaled from a smaller image."""
        max_side = self.data.max_side
        if max_side is not None and max_side < self.crop_size:
            raise ValueError(f"max_side {max_side} is below the crop size {self.crop_size}: every crop would be "
                             f"upscaled from a smaller image; give at least {self.crop_size}, or leave it out")

    def to_dict(self) -> dict:
        return {"task": self.task, **dataclasses.asdict(self)}

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")


@dataclass
class AutoencoderTrainConfig(TrainConfig):
    task = "autoencoder"
    thermal_fraction: float = 0.75  # share of thermal crops in a batch; the rest are visible
    ssim_weight: float = 1.0  # loss = L1 + ssim_weight * (1 - SSIM) + kl_weight * KL + adversarial_weight * GAN
    kl_weight: float = 1e-6
    # A PatchGAN trained beside the autoencoder judges its reconstructions (0: none, the loss above alone).
    adversarial_weight: float = 0.0
    # Instead of a new autoencoder: one exported by thermosynth, or a Stable Diffusion folder or hub id, whose decoder
    # is fine-tuned on thermal crops only (thermosynth decodes only thermal latents), its encoder and latent scaling
    # kept as they are, so UNets trained on its latents keep working with the new decoder.
    init_from: str | None = None

    def __post_init__(self):
        super().__post_init__()
        if self.architecture not in AUTOENCODER_ARCHITECTURES:
            raise ValueError(f"architecture must be one of {sorted(AUTOENCODER_ARCHITECTURES)}")
        if self.init_from:
            self.thermal_fraction = 1.0
        if not 0.0 < self.thermal_fraction <= 1.0:
            raise ValueError(f"thermal_fraction must be in (0, 1], got {self.thermal_fraction}")
        for name in ("ssim_weight", "kl_weight", "adversarial_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be 0 or more, got {getattr(self, name)}: a negative weight rewards "
                                 "the error it weighs")


def check_init_from(config) -> None:
    """An autoencoder of thermosynth's, or a pretrained Stable Diffusion (`init_from`), whose VAE is used as it is or,
    with `autoencoder` too, with the decoder `train autoencoder --init-from` fine-tuned; the thermal normalisation
    flags only where no autoencoder brings its own."""
    if not (config.autoencoder or config.init_from):
        raise ValueError("autoencoder is required: the folder of a trained autoencoder (<run>/autoencoder), or "
                         "--init-from a pretrained Stable Diffusion")
    if config.lora_rank is not None and (not config.init_from or config.lora_rank < 1):
        raise ValueError("--lora-rank needs --init-from (adapters on a pretrained UNet) and must be at least 1")
    if config.autoencoder and (config.data.thermal_normalization != "fixed" or config.data.thermal_range):
        raise ValueError("--thermal-normalization / --thermal-range go with --init-from alone; an --autoencoder "
                         "brings its own normalisation")


def resolve_prediction_type(config) -> None:
    """What a latent UNet learns to predict: the preset's choice for a new UNet, a pretrained UNet's own (recorded in
    its scheduler config) with `init_from`, whatever the preset says."""
    if config.prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {config.prediction_type!r}")
    if config.init_from:
        from thermosynth.models.stable_diffusion import pretrained_prediction_type

        config.prediction_type = pretrained_prediction_type(config.init_from)


@dataclass
class V2TTrainConfig(TrainConfig):
    task = "v2t"
    autoencoder: str = ""  # folder written by `thermosynth train autoencoder` (<run>/autoencoder)
    # instead of an autoencoder: a Stable Diffusion folder or hub id (diffusers layout), its VAE used as it is and
    # its UNet widened for the visible latent (models/stable_diffusion.py)
    init_from: str | None = None
    lora_rank: int | None = None  # with init_from: train LoRA adapters (and conv_in) instead of the whole UNet
    gradient_checkpointing: bool = False  # recompute the UNet's activations in the backward pass: less memory
    compile_unet: bool = False  # torch.compile the UNet: faster steps after a compile at the start (GPU)
    condition_dropout: float = 0.1  # LaPIG / classifier-free guidance: train the unconditional model too
    num_train_timesteps: int = 1000
    prediction_type: str = "epsilon"  # or "v_prediction", on a zero-terminal-SNR schedule (training/diffusion.py)
    validation_inference_steps: int = 25

    def __post_init__(self):
        super().__post_init__()
        if self.architecture not in V2T_UNET_ARCHITECTURES:
            raise ValueError(f"architecture must be one of {sorted(V2T_UNET_ARCHITECTURES)}")
        check_init_from(self)
        resolve_prediction_type(self)
        if not 0.0 <= self.condition_dropout < 1.0:
            raise ValueError(f"condition_dropout must be in [0, 1), got {self.condition_dropout}")


@dataclass
class Pix2PixTrainConfig(TrainConfig):
    task = "pix2pix"
    l1_weight: float = 100.0  # loss_G = GAN + l1_weight * L1 (the paper's lambda)

    def __post_init__(self):
        super().__post_init__()
        if self.architecture not in PIX2PIX_ARCHITECTURES:
            raise ValueError(f"architecture must be one of {sorted(PIX2PIX_ARCHITECTURES)}")
        multiple = 2 ** PIX2PIX_ARCHITECTURES[self.architecture]["generator_config"]["num_downs"]
        if self.crop_size % multiple:
            raise ValueError(f"crop_size must be a multiple of {multiple} for the {self.architecture} U-Net")


@dataclass
class T2IRTrainConfig(TrainConfig):
    """TxT2IR on whole images resized to `image_size` (captions name positions and counts of the whole frame, so
    neither random crops nor mirroring would keep them true)."""

    task = "t2ir"
    autoencoder: str = ""  # folder written by `thermosynth train autoencoder` (<run>/autoencoder)
    # instead of an autoencoder: a Stable Diffusion folder or hub id, its VAE, UNet and CLIP text encoder as they are
    init_from: str | None = None
    lora_rank: int | None = None  # with init_from: train LoRA adapters instead of the whole UNet
    gradient_checkpointing: bool = False  # recompute the UNet's activations in the backward pass: less memory
    compile_unet: bool = False  # torch.compile the UNet: faster steps after a compile at the start (GPU)
    # The packaged MiniLM, or a CLIP folder / hub id. With init_from: that model's own CLIP unless another encoder
    # is named, which then reaches the pretrained UNet through a learned projection. "" until resolved.
    text_encoder: str = ""
    long_clip: bool = False  # stretch CLIP to 248 positions (LongCLIP)
    image_size: tuple[int, int] = (128, 160)  # (height, width) every training image is fitted to
    condition_dropout: float = 0.1  # captions replaced by "" this often, for classifier-free guidance
    num_train_timesteps: int = 1000
    prediction_type: str = "epsilon"  # or "v_prediction", on a zero-terminal-SNR schedule (training/diffusion.py)
    # Thermal-mask loss: lambda * mean(|x0 - D(z0_hat)| * M), through the decoder (TxT2IR; DESIGN.md).
    mask_loss_weight: float = 1.0  # lambda (TxT2IR's code used 50, but its term had no gradient: never tuned)
    # apply it only for t <= this: under noise prediction z0_hat amplifies the UNet's error by sqrt((1 - abar_t) /
    # abar_t) (14x at t=999); under velocity prediction by sqrt(1 - abar_t), never more than 1x
    mask_t_max: int = 500
    # decode at most this many of a step's samples under mask_t_max for the term (an unbiased estimate of it over
    # them all): the decoder's backward pass is the costly part of a T2IR step (benchmarks/perf/RESULTS.md)
    mask_samples: int = 4
    hot_weight: float = HOT_WEIGHT
    cold_weight: float = COLD_WEIGHT
    mask_method: str = HotMaskSpec.method  # otsu | percentile
    mask_percentile: float = HotMaskSpec.percentile
    mask_in_boxes: bool = False  # keep only hot pixels inside annotated boxes (where the data set has boxes)
    decoder_checkpointing: bool = False  # recompute decoder activations in backward: less memory, more time
    validation_inference_steps: int = 25

    def __post_init__(self):
        super().__post_init__()
        self.image_size = tuple(self.image_size)
        if self.architecture not in T2IR_UNET_ARCHITECTURES:
            raise ValueError(f"architecture must be one of {sorted(T2IR_UNET_ARCHITECTURES)}")
        check_init_from(self)
        self.text_encoder = self.text_encoder or self.init_from or DEFAULT_TEXT_ENCODER
        resolve_prediction_type(self)
        if not 0.0 <= self.condition_dropout < 1.0:
            raise ValueError(f"condition_dropout must be in [0, 1), got {self.condition_dropout}")
        if self.mask_loss_weight < 0:
            raise ValueError(f"mask_loss_weight must be >= 0, got {self.mask_loss_weight}")
        if self.mask_samples < 1:
            raise ValueError(f"mask_samples must be >= 1, got {self.mask_samples}")
        if self.hot_weight < 0 or self.cold_weight < 0:  # a negative weight would reward the decoder's error
            raise ValueError(f"hot_weight and cold_weight must be >= 0, got {self.hot_weight}, {self.cold_weight}")
        if len(self.image_size) != 2 or any(s <= 0 or s % 8 for s in self.image_size):
            raise ValueError(f"image_size must be (height, width), multiples of 8, got {self.image_size}")
        HotMaskSpec(self.mask_method, self.mask_percentile)  # validates the mask settings

    def _check_max_side(self) -> None:  # whole images are fitted to image_size: nothing to downscale first
        if self.data.max_side is not None:
            raise ValueError(f"max_side does not apply to {self.task}: every image is fitted to image_size")



@dataclass
class FaceTrainConfig(TrainConfig):
    """LaPIG's identity-conditioned visible face generator, in pixel space (training/faces.py says why), on photos of
    people in CFP's layout: identities `identities` (first, last; inclusive), each photo with its view."""

    task = "faces"
    identities: tuple[int, int] = (1, 450)  # the rest of CFP (451-500) is held out for the measurement
    image_size: int = 64  # square: photos are scaled to cover it and centre-cropped
    identity_encoder: str = "sface"  # models/identity.py: sface | dlib | arcface (with identity_model)
    identity_model: str | None = None  # the ArcFace .onnx for identity_encoder "arcface"
    text_encoder: str = DEFAULT_TEXT_ENCODER  # reads the identity prompt and the captions (MiniLM: 256 tokens)
    captions: str | None = None  # a metadata.jsonl of captions (`thermosynth caption faces`); else measured ones
    condition_dropout: float = 0.1  # identity zeroed and caption emptied this often, for classifier-free guidance
    pose_loss_weight: float = 0.0  # LaPIG Eq. 3 on the predicted clean image, for t <= pose_t_max (0: off)
    pose_t_max: int = 500
    # 1 - cos(SFace(x0_hat), the photo's SFace vector), at every step, on frontal photos with their own vector (0: off)
    identity_loss_weight: float = 0.0
    num_train_timesteps: int = 1000
    validation_inference_steps: int = 25

    def __post_init__(self):
        super().__post_init__()
        self.identities = tuple(self.identities)
        if self.architecture not in FACE_UNET_ARCHITECTURES:
            raise ValueError(f"architecture must be one of {sorted(FACE_UNET_ARCHITECTURES)}")
        if len(self.identities) != 2 or not 1 <= self.identities[0] <= self.identities[1]:
            raise ValueError(f"identities must be (first, last) with 1 <= first <= last, got {self.identities}")
        if self.identity_encoder not in ENCODERS:
            raise ValueError(f"identity_encoder must be one of {ENCODERS}, got {self.identity_encoder!r}")
        if (self.identity_encoder == "arcface") != (self.identity_model is not None):
            raise ValueError("identity_model (an ArcFace .onnx) goes with identity_encoder 'arcface', and only there")
        if self.image_size < 16 or self.image_size % 8:
            raise ValueError(f"image_size must be a multiple of 8 and at least 16, got {self.image_size}")
        if not 0.0 <= self.condition_dropout < 1.0:
            raise ValueError(f"condition_dropout must be in [0, 1), got {self.condition_dropout}")
        if self.pose_loss_weight < 0:
            raise ValueError(f"pose_loss_weight must be >= 0, got {self.pose_loss_weight}")
        if self.identity_loss_weight < 0:
            raise ValueError(f"identity_loss_weight must be >= 0, got {self.identity_loss_weight}")
        if self.identity_loss_weight and self.identity_encoder != "sface":
            raise ValueError("identity_loss_weight scores faces with SFace, so the identity vectors must be SFace's "
                             f"(identity_encoder 'sface', not {self.identity_encoder!r})")

    def _check_max_side(self) -> None:  # whole images are fitted to image_size: nothing to downscale first
        if self.data.max_side is not None:
            raise ValueError(f"max_side does not apply to {self.task}: every image is fitted to image_size")

# Named presets. "tiny" finishes on 2 CPU cores in minutes (tests, demo); "base" is the shipped models' recipe
# (sized to ship: ~100 MB in fp16 for the autoencoder and both UNets; meant for one GPU with --time-budget, its
# `steps` only a cap); "small" is a larger one-GPU model; "sd15" uses SD-1.5-sized networks for big GPUs.
PRESETS: dict[str, dict[str, dict]] = {
    "autoencoder": {
        "tiny": dict(architecture="tiny", steps=400, batch_size=16, crop_size=96, learning_rate=1e-3,
                     warmup_steps=20, ema_decay=0.99, checkpoint_every=100, validate_every=200, log_every=10),
        "base": dict(architecture="small", steps=100000, batch_size=32, crop_size=256, learning_rate=2e-4,
                     warmup_steps=200, mixed_precision="bf16", ema_decay=0.999, checkpoint_every=1000,
                     validate_every=1000, log_every=50),
        "small": dict(architecture="small", steps=20000, batch_size=32, crop_size=256, learning_rate=2e-4,
                      warmup_steps=500, mixed_precision="bf16", ema_decay=0.999, checkpoint_every=2000,
                      validate_every=1000, log_every=50),
        "sd15": dict(architecture="sd15", steps=100000, batch_size=16, crop_size=256, learning_rate=1e-4,
                     warmup_steps=1000, mixed_precision="bf16", ema_decay=0.9999, checkpoint_every=5000,
                     validate_every=2500, log_every=100),
    },
    "v2t": {
        "tiny": dict(architecture="tiny", steps=1000, batch_size=32, crop_size=128, learning_rate=1e-3,
                     warmup_steps=50, ema_decay=0.995, checkpoint_every=250, validate_every=500, log_every=20),
        "base": dict(architecture="base", steps=100000, batch_size=64, crop_size=256, learning_rate=3e-4,
                     warmup_steps=200, mixed_precision="bf16", ema_decay=0.999, prediction_type="v_prediction",
                     checkpoint_every=2000, validate_every=2000, log_every=50),
        "small": dict(architecture="small", steps=20000, batch_size=64, crop_size=256, learning_rate=2e-4,
                      warmup_steps=500, mixed_precision="bf16", ema_decay=0.9995, checkpoint_every=2000,
                      validate_every=2000, log_every=50),
        "sd15": dict(architecture="sd15", steps=100000, batch_size=32, crop_size=512, learning_rate=1e-4,
                     warmup_steps=1000, mixed_precision="bf16", ema_decay=0.9999, checkpoint_every=5000,
                     validate_every=5000, log_every=100),
    },
    "t2ir": {
        "tiny": dict(architecture="tiny", steps=1500, batch_size=16, image_size=(128, 160), learning_rate=5e-4,
                     warmup_steps=50, ema_decay=0.995, checkpoint_every=250, validate_every=500, log_every=20),
        "base": dict(architecture="base", steps=100000, batch_size=32, image_size=(256, 320), learning_rate=3e-4,
                     warmup_steps=200, mixed_precision="bf16", ema_decay=0.999, checkpoint_every=2000,
                     validate_every=2000, log_every=50),
        "small": dict(architecture="small", steps=20000, batch_size=32, image_size=(256, 320), learning_rate=2e-4,
                      warmup_steps=500, mixed_precision="bf16", ema_decay=0.9995, checkpoint_every=2000,
                      validate_every=2000, log_every=50),
        "sd15": dict(architecture="sd15", steps=100000, batch_size=16, image_size=(512, 640), learning_rate=1e-4,
                     warmup_steps=1000, mixed_precision="bf16", ema_decay=0.9999, checkpoint_every=5000,
                     validate_every=5000, log_every=100, decoder_checkpointing=True),
    },
    # The paper's recipe (Adam beta1 0.5, lr 2e-4, no clipping), with a warm-up and cosine decay like every task.
    "pix2pix": {
        "tiny": dict(architecture="tiny", steps=2000, batch_size=8, crop_size=128, learning_rate=2e-4,
                     warmup_steps=20, adam_beta1=0.5, max_grad_norm=None, ema_decay=0.995, checkpoint_every=500,
                     validate_every=500, log_every=20),
        "small": dict(architecture="standard", steps=20000, batch_size=16, crop_size=256, learning_rate=2e-4,
                      warmup_steps=200, adam_beta1=0.5, max_grad_norm=None, mixed_precision="bf16",
                      ema_decay=0.999, checkpoint_every=2000, validate_every=2000, log_every=50),
    },
    # Faces at 64 px in pixel space. "small" is the CPU recipe of benchmarks/faces (2 cores, about an hour).
    "faces": {
        "tiny": dict(architecture="tiny", steps=300, batch_size=8, learning_rate=1e-3, warmup_steps=20,
                     ema_decay=0.99, checkpoint_every=100, validate_every=300, log_every=10, image_size=32),
        "small": dict(architecture="small", steps=100000, batch_size=16, learning_rate=3e-4, warmup_steps=100,
                      ema_decay=0.995, checkpoint_every=200, validate_every=500, log_every=20),
    },
}

CONFIG_CLASSES = {"autoencoder": AutoencoderTrainConfig, "v2t": V2TTrainConfig, "pix2pix": Pix2PixTrainConfig,
                  "t2ir": T2IRTrainConfig, "faces": FaceTrainConfig}


def make_config(task: str, preset: str, **overrides) -> TrainConfig:
    """The preset's config with `overrides` (None values are ignored) applied, validated."""
    if task not in PRESETS:
        raise ValueError(f"unknown task {task!r}; choose one of {sorted(PRESETS)}")
    if preset not in PRESETS[task]:
        raise ValueError(f"unknown preset {preset!r} for {task}; choose one of {sorted(PRESETS[task])}")
    values = dict(PRESETS[task][preset])
    data = overrides.pop("data", None)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return CONFIG_CLASSES[task](data=data or DataConfig(), **values)


def load_config(path: Path) -> TrainConfig:
    values = json.loads(Path(path).read_text())
    return CONFIG_CLASSES[values.pop("task")](**values)
