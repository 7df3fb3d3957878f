"""The latent codec: the one place that says how images become the latents the diffusion models see, and back.

Every trainer and pipeline goes through it, so thermosynth's own autoencoder and a pretrained Stable Diffusion VAE
are interchangeable:

- images are (B, 3, H, W) in [-1, 1]; a thermal image (B, 1, H, W) is repeated to 3 channels at the codec's boundary
  and read back as the mean of the 3 decoded channels (LaPIG and TxT2IR reuse an RGB autoencoder for thermal);
- latents are (z - shift) * scale with the posterior's mode z (deterministic, so the latents a model trains on are the
  ones its pipeline computes) and scale and shift from the VAE's config (diffusers' `scaling_factor` and
  `shift_factor`: 0.18215 and none for SD-1.5; thermosynth's autoencoders record 1 / std of their latents);
- the V2T UNet reads cat(noisy thermal latent, visible latent) along channels (LaPIG Sec. 3.4).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from diffusers import AutoencoderKL


def as_codec_input(images: torch.Tensor) -> torch.Tensor:
    """(..., 1 or 3, H, W) in [-1, 1] -> (..., 3, H, W): thermal repeated to the autoencoder's 3 channels."""
    channels = images.shape[-3]
    if channels == 3:
        return images
    if channels == 1:
        return images.expand(*images.shape[:-3], 3, *images.shape[-2:])
    raise ValueError(f"the codec reads 1 (thermal) or 3 (visible) channels, got {channels}")


def v2t_unet_input(noisy_thermal: torch.Tensor, visible_latent: torch.Tensor) -> torch.Tensor:
    """The V2T UNet's input: the noisy thermal latent first, then the visible condition (8 channels for SD-sized)."""
    return torch.cat([noisy_thermal, visible_latent], dim=1)


class LatentCodec:
    """Encode and decode through a (frozen or training) `AutoencoderKL`, in the convention above."""

    def __init__(self, vae: AutoencoderKL):
        self.vae = vae

    @property
    def scale(self) -> float:
        return float(self.vae.config.scaling_factor)

    @property
    def shift(self) -> float:
        return float(getattr(self.vae.config, "shift_factor", None) or 0.0)

    @property
    def downsampling(self) -> int:
        """Pixels per latent along each side (8 for SD's VAE)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def size_multiple(self, unet) -> int:
        """Image sides `unet` can denoise in this latent space must be multiples of this: the autoencoder's
        downsampling times the UNet's (2 per level below the first)."""
        return self.downsampling * 2 ** (len(unet.config.block_out_channels) - 1)

    @property
    def latent_channels(self) -> int:
        return int(self.vae.config.latent_channels)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 1 or 3, H, W) in [-1, 1] -> latents (B, C, H/f, W/f) in the VAE's dtype and device."""
        images = as_codec_input(images).to(self.vae.device, self.vae.dtype)
        return (self.vae.encode(images).latent_dist.mode() - self.shift) * self.scale

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> (B, 3, H, W), unclamped, in the VAE's dtype; gradients flow through the decoder."""
        return self.vae.decode(latents.to(self.vae.dtype) / self.scale + self.shift).sample

    def decode_thermal(self, latents: torch.Tensor, clamp: bool = True) -> torch.Tensor:
        """Latents -> thermal (B, 1, H, W) float32, the mean of the decoded channels; clamped to [-1, 1] unless a
        loss needs its gradient everywhere (TxT2IR's mask term)."""
        thermal = self.decode(latents).float().mean(dim=1, keepdim=True)
        return thermal.clamp(-1, 1) if clamp else thermal
