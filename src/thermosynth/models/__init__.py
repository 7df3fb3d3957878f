"""Model architectures (diffusers' AutoencoderKL and UNet2DModel) for each preset size."""

from thermosynth.models.configs import (
    AUTOENCODER_ARCHITECTURES,
    V2T_UNET_ARCHITECTURES,
    build_autoencoder,
    build_v2t_unet,
)

__all__ = ["AUTOENCODER_ARCHITECTURES", "V2T_UNET_ARCHITECTURES", "build_autoencoder", "build_v2t_unet"]
