"""pix2pix (Isola et al. 2017), the translation baseline: a U-Net generator and a PatchGAN discriminator.

No maintained library ships these two networks, so they are written here, following the paper's recipe:
stride-2 4x4 convolutions, skip connections between mirrored levels, dropout in the decoder's middle levels
(three for the 256 px U-Net), a 70x70 PatchGAN for 3 discriminator layers. Instance normalisation replaces batch
normalisation (the paper's own choice at batch size 1), so a model behaves the same in training and inference.
Both are diffusers `ModelMixin`s: they save and load as safetensors with their config.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


def _down(in_channels: int, out_channels: int, normalize: bool) -> nn.Sequential:
    layers = [nn.LeakyReLU(0.2), nn.Conv2d(in_channels, out_channels, 4, stride=2, padding=1)]
    if normalize:
        layers.append(nn.InstanceNorm2d(out_channels))
    return nn.Sequential(*layers)


def _up(in_channels: int, out_channels: int, dropout: bool) -> nn.Sequential:
    layers = [nn.ReLU(), nn.ConvTranspose2d(in_channels, out_channels, 4, stride=2, padding=1),
              nn.InstanceNorm2d(out_channels)]
    if dropout:
        layers.append(nn.Dropout(0.5))
    return nn.Sequential(*layers)


class Pix2PixGenerator(ModelMixin, ConfigMixin):
    """U-Net with `num_downs` stride-2 levels: inputs must be a multiple of 2**num_downs on each side."""

    @register_to_config
    def __init__(self, in_channels: int = 3, out_channels: int = 1, num_downs: int = 8, base_channels: int = 64):
        super().__init__()
        if num_downs < 5:
            raise ValueError(f"num_downs must be >= 5 (the pix2pix U-Net's fixed outer levels), got {num_downs}")
        widths = [base_channels * min(2**i, 8) for i in range(num_downs)]  # 64, 128, 256, 512, 512, ...
        self.first = nn.Conv2d(in_channels, widths[0], 4, stride=2, padding=1)
        # The innermost level sees 1x1 maps at the training size: no normalisation there (it would zero them).
        self.downs = nn.ModuleList(
            _down(widths[i - 1], widths[i], normalize=i < num_downs - 1) for i in range(1, num_downs)
        )
        ups = []
        for i in reversed(range(1, num_downs)):
            in_width = widths[i] if i == num_downs - 1 else 2 * widths[i]
            ups.append(_up(in_width, widths[i - 1], dropout=4 <= i < num_downs - 1))  # the 512-wide middle levels
        self.ups = nn.ModuleList(ups)
        self.last = nn.Sequential(nn.ReLU(), nn.ConvTranspose2d(2 * widths[0], out_channels, 4, stride=2, padding=1),
                                  nn.Tanh())

    @property
    def size_multiple(self) -> int:
        return 2**self.config.num_downs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.first(x)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        y = skips.pop()
        for up in self.ups:
            y = torch.cat([up(y), skips.pop()], dim=1)
        return self.last(y)


class PatchDiscriminator(ModelMixin, ConfigMixin):
    """PatchGAN: one real/fake logit per overlapping patch of cat(visible, thermal)."""

    @register_to_config
    def __init__(self, in_channels: int = 4, base_channels: int = 64, num_layers: int = 3):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, base_channels, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        width = base_channels
        for i in range(1, num_layers + 1):
            out = base_channels * min(2**i, 8)
            stride = 2 if i < num_layers else 1
            layers += [nn.Conv2d(width, out, 4, stride=stride, padding=1), nn.InstanceNorm2d(out),
                       nn.LeakyReLU(0.2)]
            width = out
        layers.append(nn.Conv2d(width, 1, 4, stride=1, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Pix2PixPair(ModelMixin, ConfigMixin):
    """Generator and discriminator trained together as one module (the training loop trains one module)."""

    @register_to_config
    def __init__(self, generator_config: dict | None = None, discriminator_config: dict | None = None):
        super().__init__()
        self.generator = Pix2PixGenerator(**(generator_config or {}))
        self.discriminator = PatchDiscriminator(**(discriminator_config or {}))


PIX2PIX_ARCHITECTURES: dict[str, dict] = {
    # tiny: CPU minutes at 128 px crops; standard: the paper's unet_256 + 70x70 PatchGAN.
    "tiny": dict(generator_config=dict(num_downs=7, base_channels=32), discriminator_config=dict(base_channels=32)),
    "standard": dict(generator_config=dict(num_downs=8, base_channels=64),
                     discriminator_config=dict(base_channels=64)),
}


def build_pix2pix(architecture: str) -> Pix2PixPair:
    if architecture not in PIX2PIX_ARCHITECTURES:
        raise ValueError(f"unknown pix2pix architecture {architecture!r}; choose one of "
                         f"{sorted(PIX2PIX_ARCHITECTURES)}")
    return Pix2PixPair(**PIX2PIX_ARCHITECTURES[architecture])
