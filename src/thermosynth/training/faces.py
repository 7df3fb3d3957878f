"""Training LaPIG's identity-conditioned face generator (in progress: the losses first).

LaPIG Eq. 3, the SSIM pose loss, pulls each generated view towards the pose of its reference photo:

    L_pose = - sum_i SSIM(pose_i, generated pose_i)      over the reference poses i (LaPIG uses 4)
"""

from __future__ import annotations

import torch
from torchmetrics.functional.image import structural_similarity_index_measure


def pose_loss(reference: torch.Tensor, generated: torch.Tensor) -> torch.Tensor:
    """LaPIG Eq. 3 for (N, C, H, W) reference poses and the views generated for them, in [-1, 1]: minus the sum over
    the N pairs of their SSIM (Gaussian window 11, sigma 1.5, on the 0..1 scale). Differentiable."""
    if reference.shape != generated.shape or reference.ndim != 4:
        raise ValueError(f"need reference and generated poses of one (N, C, H, W) shape, got "
                         f"{tuple(reference.shape)} and {tuple(generated.shape)}")
    dtype = torch.promote_types(generated.dtype, torch.float32)  # half precision is too coarse for SSIM's variances
    per_pose = structural_similarity_index_measure((generated.to(dtype) + 1) / 2, (reference.to(dtype) + 1) / 2,
                                                   data_range=1.0, reduction="none")
    return -per_pose.sum()
