"""Face identity metrics: verification rate at fixed false-accept rates, and Rank-1 identification.

Probes (e.g. generated faces) are compared with a gallery (e.g. real photos of the same people) by cosine
similarity of face-identity embeddings. For each target FAR the threshold is the lowest score that impostor pairs
(different identities) exceed at most that often; the verification rate (VR) is the share of genuine pairs (same
identity) above it. The thresholds are reported with the rates, and so is the FAR resolution: with M impostor
pairs, a FAR below 1/M cannot be measured and is reported as such.

The embeddings come from the identity encoders in `models/identity.py` (SFace, dlib, ArcFace ONNX); to score a
generator conditioned on one encoder, verify with another (dlib for SFace-conditioned faces).
"""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics import Metric

DEFAULT_FARS = (1e-3, 1e-2)


def verification_metrics(
    probe: np.ndarray, probe_ids: np.ndarray, gallery: np.ndarray, gallery_ids: np.ndarray,
    fars: tuple[float, ...] = DEFAULT_FARS,
) -> dict[str, float]:
    """VR at each FAR, its threshold, Rank-1, and pair counts, from (N, d) / (M, d) embeddings and their ids."""
    probe, gallery = np.asarray(probe, np.float64), np.asarray(gallery, np.float64)
    probe_ids, gallery_ids = np.asarray(probe_ids), np.asarray(gallery_ids)
    if probe.ndim != 2 or gallery.ndim != 2 or probe.shape[1] != gallery.shape[1]:
        raise ValueError(f"embeddings must be (N, d) and (M, d), got {probe.shape} and {gallery.shape}")
    if len(probe) != len(probe_ids) or len(gallery) != len(gallery_ids):
        raise ValueError("one identity per embedding is needed")
    if len(probe) == 0 or len(gallery) == 0:
        raise ValueError("no probe or no gallery embeddings")
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)  # noqa: E731
    scores = unit(probe) @ unit(gallery).T  # (N, M) cosine similarity
    same = probe_ids[:, None] == gallery_ids[None, :]
    genuine, impostor = scores[same], np.sort(scores[~same])
    if genuine.size == 0 or impostor.size == 0:
        raise ValueError("need both genuine (same identity) and impostor (different identity) pairs")

    result: dict[str, float] = {
        "rank1": float(np.mean(gallery_ids[scores.argmax(axis=1)] == probe_ids)),
        "genuine_pairs": float(genuine.size), "impostor_pairs": float(impostor.size),
        "far_resolution": 1.0 / impostor.size,
    }
    for far in fars:
        # the smallest threshold t with mean(impostor > t) <= far: the impostor score at rank ceil(M * (1 - far))
        allowed = int(np.floor(far * impostor.size))  # impostor pairs that may score above t
        threshold = impostor[impostor.size - allowed - 1]
        key = f"{far * 100:g}%"
        result[f"vr@far={key}"] = float(np.mean(genuine > threshold))
        result[f"threshold@far={key}"] = float(threshold)
        result[f"measured_far@far={key}"] = float(np.mean(impostor > threshold))
    return result


class FaceVerification(Metric):
    """Accumulates probe and gallery embeddings with identities; `compute()` gives `verification_metrics`."""

    full_state_update = False

    def __init__(self, fars: tuple[float, ...] = DEFAULT_FARS, **kwargs):
        super().__init__(**kwargs)
        self.fars = fars
        for name in ("probe", "probe_ids", "gallery", "gallery_ids"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, embeddings: torch.Tensor, identities: torch.Tensor, gallery: bool) -> None:
        embeddings = torch.as_tensor(embeddings, dtype=torch.float64)
        identities = torch.as_tensor(identities, dtype=torch.long)
        if embeddings.ndim != 2 or len(embeddings) != len(identities):
            raise ValueError("update() takes (N, d) embeddings and N identities")
        (self.gallery if gallery else self.probe).append(embeddings)
        (self.gallery_ids if gallery else self.probe_ids).append(identities)

    def compute(self) -> dict[str, float]:
        cat = lambda items: torch.cat(items).numpy() if isinstance(items, list) else items.numpy()  # noqa: E731
        if not self.probe or not self.gallery:
            raise ValueError("add probe and gallery embeddings first (update(..., gallery=False/True))")
        return verification_metrics(cat(self.probe), cat(self.probe_ids), cat(self.gallery), cat(self.gallery_ids),
                                    self.fars)
