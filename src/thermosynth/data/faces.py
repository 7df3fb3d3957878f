"""Face photos with identities and views: the CFP reader, and the view of a face from its landmarks.

Views are named by where the face points in the image: ``frontal``, ``profile_left`` (the nose points to the image's
left) and ``profile_right``. They come from what can be measured, never guessed: CFP's frontal/profile folders and
its 30 fiducials, or the five landmarks of a face detector (YuNet).
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.numpy import load_file, save_file
from tqdm.auto import tqdm

from thermosynth.data.augment import fit_to_size
from thermosynth.data.datasets import visible_to_tensor
from thermosynth.data.errors import DataError
from thermosynth.data.images import atomic_write, read_visible

VIEWS = ("frontal", "profile_left", "profile_right")

# |nose offset| / eye distance at or above which a face is a profile. Measured with YuNet on CFP identities 1-100
# (1,000 frontal, 396 detected profile photos): 99.9% of frontal photos fall below 0.2 and 96.7% of profile ones at
# or above it; the offset's sign agrees with the fiducials' direction on 99.7% of the profiles.
PROFILE_OFFSET = 0.2


def _direction(nose_x: float, reference_x: float) -> str:
    return "profile_right" if nose_x > reference_x else "profile_left"

# What a caption may say of a photo's view: measured (CFP's folders and fiducials, or landmarks), never guessed.
VIEW_WORDS = {"frontal": "frontal view", "profile_left": "profile view, facing left",
              "profile_right": "profile view, facing right"}


def check_views(views) -> tuple[str, ...]:
    """The views asked for, checked against the generator's (VIEWS); None means all of them."""
    views = VIEWS if views is None else tuple(views)
    unknown = sorted(set(views) - set(VIEWS))
    if unknown or not views:
        raise ValueError(f"unknown view(s) {unknown or 'none given'}: views must be some of {', '.join(VIEWS)}")
    return views


def face_caption(view: str) -> str:
    """The caption thermosynth can write of a face photo without a VLM: what it measured, the view."""
    check_views([view])
    return f"a photo of a face, {VIEW_WORDS[view]}"


def caption_faces(root: str | Path, out: str | Path | None = None, vlm: str | None = None, **vlm_options) -> Path:
    """metadata.jsonl captions for CFP-layout photos (`train faces --captions`): the measured view of each photo
    (face_caption) and, with `vlm` (an image-text model's folder or hub id), the model's sentence after it, e.g.
    "a photo of a face, frontal view. A man with short dark hair and glasses, smiling." Returns the file."""
    from thermosynth.data.captions import _relative, read_metadata, write_metadata

    photos = read_cfp(root)
    out_dir = Path(out) if out is not None else Path(root)
    described = {}
    if vlm is not None:
        from thermosynth.data.vlm_captions import caption_with_vlm

        made = caption_with_vlm(root, vlm, out_dir, files=[p.path for p in photos], visible=True, **vlm_options)
        described = {path.resolve(): captions[-1] for path, captions in read_metadata(made)}
    entries = []
    for photo in photos:
        text = face_caption(photo.view)
        sentence = described.get(photo.path.resolve(), "").strip()
        entries.append({"file_name": _relative(photo.path, out_dir),
                        "text": f"{text}. {sentence}" if sentence else text})
    return write_metadata(entries, out_dir)


def view_from_landmarks(landmarks: np.ndarray) -> str:
    """The view of a face from its five detector landmarks (YuNet's order: image-left eye, image-right eye, nose tip,
    mouth corners): the nose tip's horizontal offset from between the eyes, in eye distances."""
    points = np.asarray(landmarks, dtype=np.float64)
    if points.shape != (5, 2):
        raise ValueError(f"expected five (x, y) landmarks, got shape {points.shape}")
    between_eyes = points[:2].mean(axis=0)
    eye_distance = max(float(np.linalg.norm(points[1] - points[0])), 1e-6)
    offset = (points[2, 0] - between_eyes[0]) / eye_distance
    return "frontal" if abs(offset) < PROFILE_OFFSET else _direction(points[2, 0], between_eyes[0])


def view_from_cfp_fiducials(fiducials: np.ndarray, profile: bool) -> str:
    """CFP's view: its folder says frontal or profile; for a profile, the direction is where the nose (fiducials
    19-23) lies from the top of the visible jaw contour, next to the ear (fiducial 1)."""
    points = np.asarray(fiducials, dtype=np.float64)
    if points.shape != (30, 2):
        raise ValueError(f"expected CFP's 30 (x, y) fiducials, got shape {points.shape}")
    if not profile:
        return "frontal"
    return _direction(points[18:23, 0].mean(), points[0, 0])


@dataclass(frozen=True)
class FacePhoto:
    path: Path
    identity: int
    view: str


def read_cfp(root: str | Path, identities: range | None = None) -> list[FacePhoto]:
    """CFP's photos (`Data/Images/NNN/{frontal,profile}/NN.jpg`) with identity (NNN) and view (folder and
    `Data/fiducials.csv`), in file order; `identities` keeps only those (e.g. range(1, 451) for training)."""
    root = Path(root)
    table = root / "Data" / "fiducials.csv"
    if not table.is_file():
        raise DataError(f"{root}: not CFP as thermosynth reads it (no Data/fiducials.csv with each image's 30 "
                        "fiducials). Give the folder that holds Data/ and Protocol/.")
    photos = []
    with table.open(newline="") as f:
        for row in csv.DictReader(f):
            name = row["image"]
            identity_text, folder, _ = name.split("/")
            identity = int(identity_text)
            if identities is not None and identity not in identities:
                continue
            fiducials = np.array([[float(row[f"x{i}"]), float(row[f"y{i}"])] for i in range(1, 31)])
            path = root / "Data" / "Images" / name
            if not path.is_file():
                raise DataError(f"{path}: listed in {table} but missing. Restore the file or the whole data set.")
            photos.append(FacePhoto(path, identity, view_from_cfp_fiducials(fiducials, folder == "profile")))
    if not photos:
        raise DataError(f"{table}: no photos of identities {identities}.")
    return photos


def mean_identity(vectors) -> np.ndarray:
    """A person's identity vector from several of their photos' unit vectors: the mean, renormalised to unit length
    (the one convention for it: training's identity_vectors and `synthesize faces` both use it)."""
    total = np.sum(np.asarray(vectors, dtype=np.float64), axis=0)
    return (total / np.linalg.norm(total)).astype(np.float32)


@dataclass
class IdentityVectors:
    vectors: dict[int, np.ndarray]  # identity -> unit vector: the mean of its frontal photos' vectors, renormalised
    skipped: list[tuple[Path, str]]  # photos whose face could not be read, with the reason
    encoder: str
    by_photo: dict[Path, np.ndarray] = field(default_factory=dict)  # each readable frontal photo's own unit vector
    landmarks: dict[Path, np.ndarray] = field(default_factory=dict)  # and its face's five landmarks (5, 2), in pixels


def identity_vectors(photos: list[FacePhoto], encoder, cache: Path | None = None,
                     largest_face: bool = True) -> IdentityVectors:
    """Each frontal photo's identity vector and five face landmarks, and one vector per person: the mean of their
    frontal photos' (profile photos are left out: identity encoders read frontal faces far better). Photos without a
    usable face are skipped and listed, never dropped silently; an identity none of whose photos could be read gets
    no vector. With `cache` (a .safetensors file) the result is read from there when the same encoder, reading the
    same photos the same way, made it; else computed and written atomically."""
    frontal = [p for p in photos if p.view == "frontal"]
    listing = "\n".join(sorted(f"{p.identity}:{p.path}" for p in frontal))
    # what is stored (one vector a photo), the encoder, how it picks among several faces, and the photos it read
    key = f"per-photo+landmarks:{encoder.name}:{largest_face}:{hashlib.sha256(listing.encode()).hexdigest()}"
    by_photo: dict[Path, np.ndarray] = {}
    landmarks: dict[Path, np.ndarray] = {}
    skipped = []
    if cache is not None and Path(cache).is_file():
        with safe_open(str(cache), framework="np") as f:
            meta = f.metadata() or {}
        if meta.get("key") == key:
            stored = load_file(str(cache))
            by_photo = {Path(k.split(":", 1)[1]): v for k, v in stored.items() if k.startswith("vector:")}
            landmarks = {Path(k.split(":", 1)[1]): v for k, v in stored.items() if k.startswith("landmarks:")}
            skipped = [(Path(p), reason) for p, reason in json.loads(meta["skipped"])]
    if not by_photo and not skipped:
        for photo in tqdm(frontal, desc=f"identity vectors ({encoder.name})", leave=False):
            try:
                face = encoder.encode(read_visible(photo.path), str(photo.path), largest_face=largest_face)
            except DataError as error:
                skipped.append((photo.path, str(error)))
                continue
            by_photo[photo.path] = face.vector.astype(np.float32)
            landmarks[photo.path] = np.asarray(face.landmarks, np.float32)
        if cache is not None:
            meta = {"key": key, "skipped": json.dumps([(str(p), reason) for p, reason in skipped])}
            tensors = {**{f"vector:{p}": v for p, v in by_photo.items()},
                       **{f"landmarks:{p}": v for p, v in landmarks.items()}}
            atomic_write(Path(cache), lambda tmp: save_file(tensors, str(tmp), meta))
    read: dict[int, list[np.ndarray]] = {}
    for photo in frontal:
        if photo.path in by_photo:
            read.setdefault(photo.identity, []).append(by_photo[photo.path])
    vectors = {identity: mean_identity(found) for identity, found in read.items()}
    return IdentityVectors(vectors, skipped, encoder.name, by_photo, landmarks)


VIEW_INDEX = {view: index for index, view in enumerate(VIEWS)}  # the generator's view classes
MIRRORED = {"frontal": "frontal", "profile_left": "profile_right", "profile_right": "profile_left"}


class FaceImages:
    """Photos of people with identity vectors, ready to train on: each fitted to `size` x `size` (scaled to cover,
    centre-cropped) and kept as uint8; a draw mirrors half the photos, swapping left and right profiles. Photos of
    identities without a vector are left out, and those identities listed in `left_out`.

    A frontal photo is conditioned on its own vector, as Arc2Face trains; a photo without one (a profile, or a frontal
    photo the encoder could not read) on the person's mean. Why not the mean for all: with 450 people the generator
    would see 450 conditioning points and learn them as class labels, with nothing between them for a new person's
    vector to land on; each photo's own vector gives it ten times as many, spread as a new person's single photo is.
    `landmarks` (N, 5, 2) holds those photos' five face landmarks in the fitted image's pixels (NaN for the others):
    where the identity loss aligns the generated face for SFace."""

    def __init__(self, photos: list[FacePhoto], identities: IdentityVectors, size: int = 64):
        kept = [p for p in photos if p.identity in identities.vectors]
        self.left_out = sorted({p.identity for p in photos} - set(identities.vectors))
        if not kept:
            raise DataError("no photo belongs to an identity with a vector: nothing to train on")
        self.size = size
        fitted = [fit_to_size(read_visible(p.path), (size, size)) for p in kept]
        self.images = torch.from_numpy(np.stack([image for image, _ in fitted]))
        self.landmarks = torch.full((len(kept), 5, 2), float("nan"))
        for index, (photo, (_, (scale_x, scale_y, offset_x, offset_y))) in enumerate(zip(kept, fitted, strict=True)):
            if photo.path in identities.landmarks:  # a photo with its own vector
                points = identities.landmarks[photo.path] * [scale_x, scale_y] + [offset_x, offset_y]
                self.landmarks[index] = torch.from_numpy(points.astype(np.float32))
        self.identities = torch.tensor([p.identity for p in kept])
        self.vectors = torch.from_numpy(np.stack([identities.by_photo.get(p.path, identities.vectors[p.identity])
                                                  for p in kept])).float()
        self.views = [p.view for p in kept]
        self.photos = kept

    def __len__(self) -> int:
        return len(self.views)

    def frontal_template(self) -> list[list[float]] | None:
        """The mean five landmarks of the photos that have them (frontal photos with their own vector), in the
        fitted image's pixels: where a generated frontal face's features sit, for identity guidance. None without
        any."""
        known = ~self.landmarks.isnan().any(dim=(1, 2))
        return self.landmarks[known].mean(0).tolist() if known.any() else None

    def sample(self, batch_size: int, generator) -> dict:
        """images (B, 3, S, S) in [-1, 1], identity vectors (B, d), view classes (B,) (VIEW_INDEX) after mirroring,
        whether each was mirrored (B,), identities (B,), and the photos' indices (B,) (self.photos)."""
        indices = torch.randint(len(self), (batch_size,), generator=generator)
        mirror = torch.rand(batch_size, generator=generator) < 0.5
        images = torch.stack([visible_to_tensor(self.images[i].numpy()) for i in indices.tolist()])
        images = torch.where(mirror[:, None, None, None], images.flip(-1), images)
        views = [MIRRORED[self.views[i]] if m else self.views[i]
                 for i, m in zip(indices.tolist(), mirror.tolist(), strict=True)]
        return {"images": images, "identity_vectors": self.vectors[indices], "identities": self.identities[indices],
                "views": torch.tensor([VIEW_INDEX[v] for v in views]), "mirrored": mirror, "indices": indices}
