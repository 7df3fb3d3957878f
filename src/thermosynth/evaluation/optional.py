"""Metrics whose networks thermosynth cannot ship: FID on Inception-v3 and LPIPS on AlexNet.

Both come from torchmetrics and need weights the user already has (nothing is downloaded) and, through
torchmetrics, `torch-fidelity` (FID) or `torchvision` (LPIPS). Each factory returns the metric, or raises
`MetricUnavailable` with a sentence that says what is missing and how to provide it; reports print that sentence.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

# torch-fidelity's port of the TensorFlow FID Inception (the weights every published FID uses), as torch-fidelity
# names it in the torch hub cache.
INCEPTION_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_WEIGHTS_ENV = "THERMOSYNTH_INCEPTION_WEIGHTS"
ALEXNET_WEIGHTS_FILE = "alexnet-owt-7be5be79.pth"  # torchvision's ImageNet AlexNet, LPIPS' standard backbone


class MetricUnavailable(RuntimeError):
    """An optional metric cannot be computed here; the message says why and what to do."""


def _hub_checkpoint(name: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def find_inception_weights(path: str | os.PathLike | None = None) -> Path:
    """The FID Inception weights: `path`, else $THERMOSYNTH_INCEPTION_WEIGHTS, else torch hub's cache."""
    if path is not None:
        candidate = Path(path)
        if not candidate.is_file():
            raise MetricUnavailable(f"FID not computed: Inception weights {candidate} do not exist.")
        return candidate
    candidate = Path(os.environ.get(INCEPTION_WEIGHTS_ENV) or _hub_checkpoint(INCEPTION_WEIGHTS_FILE))
    if not candidate.is_file():
        raise MetricUnavailable(
            f"FID not computed: no Inception-v3 FID weights at {candidate}. Put torch-fidelity's "
            f"{INCEPTION_WEIGHTS_FILE} there, or pass --inception-weights PATH (or set {INCEPTION_WEIGHTS_ENV})."
        )
    return candidate


def inception_fid_metric(weights_path: str | os.PathLike | None = None, **metric_options):
    """torchmetrics' FrechetInceptionDistance (2048-d pool features) with local weights; takes uint8 (B, 3, H, W)."""
    weights = find_inception_weights(weights_path)
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance

        return FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=str(weights), **metric_options)
    except (ImportError, ModuleNotFoundError) as error:
        raise MetricUnavailable(
            f"FID not computed: torchmetrics needs torch-fidelity (and its torchvision) for Inception ({error}). "
            "Install torch-fidelity with a torchvision that matches your torch."
        ) from error


def lpips_metric(**metric_options):
    """torchmetrics' LPIPS (AlexNet backbone, inputs in [-1, 1]) when torchvision and the AlexNet weights are here."""
    weights = _hub_checkpoint(ALEXNET_WEIGHTS_FILE)
    if not weights.is_file():
        raise MetricUnavailable(
            f"LPIPS not computed: AlexNet weights not found at {weights} (thermosynth never downloads them). "
            "Put torchvision's alexnet-owt-7be5be79.pth there to enable it."
        )
    try:
        from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

        return LearnedPerceptualImagePatchSimilarity(net_type="alex", normalize=False, **metric_options)
    except (ImportError, ModuleNotFoundError, RuntimeError) as error:
        raise MetricUnavailable(f"LPIPS not computed: torchmetrics' LPIPS needs torchvision ({error}).") from error
