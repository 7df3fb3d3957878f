"""Architectures by preset name. Every model is a stock diffusers class; only its sizes are chosen here.

The autoencoder always downsamples by 8 into 4 latent channels (4 encoder blocks), as LaPIG and SD-1.5 do, so a
latent pixel covers 8x8 image pixels whatever the preset.
"""

from __future__ import annotations

from diffusers import AutoencoderKL, UNet2DModel

LATENT_CHANNELS = 4

AUTOENCODER_ARCHITECTURES: dict[str, dict] = {
    # CPU-sized: trains in minutes on 2 cores.
    "tiny": dict(block_out_channels=(32, 32, 64, 64), layers_per_block=1, norm_num_groups=16),
    # The shipped models' shared autoencoder (the calibration AE in DESIGN.md: 64-128-256-256), 20.9M parameters.
    "small": dict(block_out_channels=(64, 128, 256, 256), layers_per_block=2, norm_num_groups=32),
    # SD-1.5's autoencoder shape, for users with large GPUs.
    "sd15": dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, norm_num_groups=32),
}

V2T_UNET_ARCHITECTURES: dict[str, dict] = {
    "tiny": dict(
        block_out_channels=(64, 128, 128),
        down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        norm_num_groups=32,
        attention_head_dim=32,
    ),
    # The shipped model's size: 16.6M parameters, ~0.12 s per denoising step at 256 px on 2 CPU cores.
    "base": dict(
        block_out_channels=(64, 128, 192, 192),
        down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        layers_per_block=2,
        norm_num_groups=32,
        attention_head_dim=32,
    ),
    "small": dict(
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        layers_per_block=2,
        norm_num_groups=32,
        attention_head_dim=64,
    ),
    # SD-1.5's UNet widths and depth (860M with cross-attention; this self-attention variant is similar in size).
    "sd15": dict(
        block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D"),
        layers_per_block=2,
        norm_num_groups=32,
        attention_head_dim=64,
    ),
}


def _lookup(table: dict[str, dict], name: str, what: str) -> dict:
    if name not in table:
        raise ValueError(f"unknown {what} architecture {name!r}; choose one of {sorted(table)}")
    return dict(table[name])


def build_autoencoder(name: str) -> AutoencoderKL:
    arch = _lookup(AUTOENCODER_ARCHITECTURES, name, "autoencoder")
    blocks = len(arch["block_out_channels"])
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=LATENT_CHANNELS,
        down_block_types=("DownEncoderBlock2D",) * blocks,
        up_block_types=("UpDecoderBlock2D",) * blocks,
        **arch,
    )


def build_v2t_unet(name: str, latent_channels: int = LATENT_CHANNELS) -> UNet2DModel:
    """The V2T denoiser: input is cat(noisy thermal latent, visible latent), output the predicted noise."""
    arch = _lookup(V2T_UNET_ARCHITECTURES, name, "V2T UNet")
    return UNet2DModel(in_channels=2 * latent_channels, out_channels=latent_channels, **arch)


T2IR_UNET_ARCHITECTURES: dict[str, dict] = {
    "tiny": dict(
        block_out_channels=(64, 128),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        layers_per_block=1,
        norm_num_groups=32,
        attention_head_dim=8,
    ),
    # The shipped model's size: 15.5M parameters at MiniLM's 384-d token states.
    "base": dict(
        block_out_channels=(64, 128, 192, 192),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        layers_per_block=1,
        norm_num_groups=32,
        attention_head_dim=8,
    ),
    "small": dict(
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        layers_per_block=2,
        norm_num_groups=32,
        attention_head_dim=8,
    ),
    # SD-1.5's UNet (860M at cross_attention_dim 768).
    "sd15": dict(
        block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        layers_per_block=2,
        norm_num_groups=32,
        attention_head_dim=8,
    ),
}


def build_t2ir_unet(name: str, cross_attention_dim: int, latent_channels: int = LATENT_CHANNELS):
    """The TxT2IR denoiser: a thermal latent, conditioned on text token states by cross-attention."""
    from diffusers import UNet2DConditionModel

    arch = _lookup(T2IR_UNET_ARCHITECTURES, name, "T2IR UNet")
    return UNet2DConditionModel(in_channels=latent_channels, out_channels=latent_channels,
                                cross_attention_dim=cross_attention_dim, **arch)


# LaPIG's identity-conditioned face generator, here in pixel space at 64 px (training/faces.py says why). Cross-
# attention only at 16 and 8 px, where it is cheap: at 32 px self-attention made a step four to ten times slower on 2
# cores. Besides Arc2Face's cross-attention to the identity prompt, the identity vector itself (with the view, one-hot)
# reaches every ResNet block through the time embedding: diffusers' class_embed_type "projection" (an MLP, as
# unCLIP's image embedding does). With cross-attention alone the UNet's output moved by 0.1% between identities after
# 600 CPU steps; pooling the prompt's token states into the time embedding instead raised that only to 0.3-0.5%.
FACE_UNET_ARCHITECTURES: dict[str, dict] = {
    "tiny": dict(
        block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        norm_num_groups=16,
        attention_head_dim=8,
    ),
    # 17.0M parameters at MiniLM's 384-d states, 128-d SFace vectors: 2.1 s per step of 16 64-px faces on 2 CPU cores.
    "small": dict(
        block_out_channels=(32, 64, 128, 256),
        down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        norm_num_groups=32,
        attention_head_dim=8,
    ),
}


def build_face_unet(name: str, cross_attention_dim: int, views: int, identity_dim: int, image_channels: int = 3):
    """The face denoiser: RGB pixels, conditioned on identity and caption token states by cross-attention, and on the
    identity vector and the view (pipelines.faces.face_class_labels) through the time embedding."""
    from diffusers import UNet2DConditionModel

    arch = _lookup(FACE_UNET_ARCHITECTURES, name, "face UNet")
    return UNet2DConditionModel(in_channels=image_channels, out_channels=image_channels,
                                cross_attention_dim=cross_attention_dim, class_embed_type="projection",
                                projection_class_embeddings_input_dim=identity_dim + views, **arch)
