"""Paired visible/thermal face data sets (LaPIG's Algorithm 1): the engine behind `thermosynth synthesize faces`.

Photos of each person in; for every person, view and sample a visible face and its thermal pair out:

    out/visible/<person>_<view>_<k>.png, out/thermal/<person>_<view>_<k>.png
    out/metadata.jsonl   one line per finished pair: file names, person, view, seed, caption, models
    out/skipped.jsonl    one line per person left out, with the reason (no readable face in their photos)
    out/synthesis.json   the settings; a resumed run must use the same ones

Resumable: a pair counts as done once its metadata line is written (after both images, each written atomically),
so a killed run, re-run, makes exactly the missing pairs; nothing is lost or written twice. Each pair's noise comes
from (seed, person, view, k), one generator per pair through both stages, and the pairs fall into the same batches
on every run (fixed slices of the list of all pairs; a slice with some pairs done is made whole again and only its
missing pairs written), so resumption does not change which image a pair gets. This matters with identity guidance:
SFace's gradient turns the rounding that differs between batch compositions into differences of several grey levels;
without it, another --batch-size changes the images within rounding.
"""

from __future__ import annotations

import json
import logging
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from thermosynth import __version__
from thermosynth.data.errors import DataError
from thermosynth.data.faces import VIEWS, check_views, face_caption, mean_identity, view_from_landmarks
from thermosynth.data.images import atomic_write, list_images, read_visible
from thermosynth.pipelines.faces import PairedFacePipeline
from thermosynth.resumable import check_settings, model_settings, weights_fingerprint, write_settings

logger = logging.getLogger(__name__)

METADATA, SKIPPED, SETTINGS = "metadata.jsonl", "skipped.jsonl", "synthesis.json"


def read_people(folder: str | os.PathLike) -> dict[str, list[Path]]:
    """Photos by person: one subfolder per person (its name the person's), or a flat folder of photos, one person
    each (named by the file)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder. Give a folder of photos, one subfolder (or one photo) a person.")
    people = {p.name: list_images(p) for p in sorted(folder.iterdir()) if p.is_dir()}
    people = {name: photos for name, photos in people.items() if photos}
    if not people:
        people = {p.stem: [p] for p in list_images(folder)}
    if not people:
        raise DataError(f"{folder}: no photos (png, jpg, tif, bmp), directly or in subfolders one a person.")
    return people


def person_vector(photos: list[Path], encoder, largest_face: bool) -> tuple[np.ndarray | None, list[str]]:
    """A person's identity vector: the mean of their frontal photos' vectors (all readable ones when none is
    frontal), renormalised; None with the reasons when no photo has a readable face."""
    found, problems = [], []
    for path in photos:
        try:
            face = encoder.encode(read_visible(path), str(path), largest_face=largest_face)
        except DataError as error:
            problems.append(str(error).splitlines()[0])
            continue
        # YuNet's five landmarks (SFace, ArcFace) tell the view; dlib's are ordered otherwise
        readable = len(face.landmarks) == 5 and encoder.name != "dlib"
        frontal = not readable or view_from_landmarks(face.landmarks) == "frontal"
        found.append((face.vector, frontal))
    if not found:
        return None, problems
    return mean_identity([v for v, frontal in found if frontal] or [v for v, _ in found]), problems


@dataclass(frozen=True)
class PairJob:
    person: str
    view: str
    k: int
    seed: int

    @property
    def name(self) -> str:
        return f"{self.person}_{self.view}_{self.k}"


def pair_seed(seed: int, person: str, view: str, k: int) -> int:
    return zlib.crc32(f"{seed}/{person}/{view}/{k}".encode())


def _finished(metadata: Path) -> set[str]:
    """Names of the pairs recorded in metadata.jsonl; a last line cut short by a kill is dropped from the file."""
    if not metadata.is_file():
        return set()
    lines, names = [], set()
    for line in metadata.read_text().splitlines():
        try:
            name = Path(json.loads(line)["file_name"]).stem
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
        if name not in names:
            names.add(name)
            lines.append(line)
    atomic_write(metadata, lambda tmp: tmp.write_text("".join(line + "\n" for line in lines)))
    return names


def synthesize_faces(
    pipeline: PairedFacePipeline,
    photos: str | os.PathLike,
    out: str | os.PathLike,
    encoder,
    views: tuple[str, ...] = VIEWS,
    per_view: int = 1,
    seed: int = 0,
    batch_size: int = 8,
    largest_face: bool = False,
    face_model: str = "",
    thermal_model: str = "",
    num_inference_steps: int | None = None,
    guidance_scale: float | None = None,
    thermal_inference_steps: int | None = None,
    thermal_guidance_scale: float | None = None,
    identity_guidance: float | None = None,
) -> dict[str, int]:
    """Write the paired data set into `out` (see the module's docstring); returns counts: written, already_done,
    people, skipped_people. `identity_guidance`: as IdentityFacePipeline takes it (None: the model's default)."""
    views = check_views(views)
    if per_view < 1 or batch_size < 1:
        raise ValueError("per_view and batch_size must be at least 1")
    people = read_people(photos)
    steering = pipeline.faces.identity_guidance(identity_guidance)  # refused here, before any work, if it cannot
    identity_guidance = steering.scale if steering is not None else 0.0
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: a file, not a folder. Give --out a folder (it is created if missing).")
    for sub in ("visible", "thermal"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    settings = {"face_model": face_model, "face_model_fingerprint": weights_fingerprint(pipeline.faces.unet),
                "thermal_model": thermal_model, "thermal_model_fingerprint": model_settings(pipeline.thermal)["model"],
                "identity_encoder": encoder.name, "views": list(views),
                "per_view": per_view, "seed": seed, "largest_face": largest_face,
                "num_inference_steps": num_inference_steps, "guidance_scale": guidance_scale,
                "thermal_inference_steps": thermal_inference_steps, "thermal_guidance_scale": thermal_guidance_scale,
                "thermal_size": pipeline.thermal_size, "identity_guidance": identity_guidance}
    check_settings(out / SETTINGS, settings, "a data set")
    write_settings(out / SETTINGS, settings)

    vectors, skipped = {}, []
    for person, files in tqdm(people.items(), desc="identity vectors", leave=False):
        vector, problems = person_vector(files, encoder, largest_face)
        if vector is None:
            skipped.append({"person": person, "photos": [str(f) for f in files], "reasons": problems})
            logger.warning("skipped %s: no readable face in its %d photo(s), e.g. %s", person, len(files), problems[0])
        else:
            vectors[person] = vector
    atomic_write(out / SKIPPED, lambda tmp: tmp.write_text("".join(json.dumps(s) + "\n" for s in skipped)))

    done = _finished(out / METADATA)
    jobs = [PairJob(person, view, k, pair_seed(seed, person, view, k))
            for person in vectors for view in views for k in range(per_view)]
    todo = [job for job in jobs if job.name not in done]
    batches = [jobs[start : start + batch_size] for start in range(0, len(jobs), batch_size)]
    logger.info("%d people (%d skipped), %d pairs: %d done before, %d to make", len(vectors), len(skipped),
                len(jobs), len(jobs) - len(todo), len(todo))
    versions = {"face_model": face_model, "face_model_fingerprint": settings["face_model_fingerprint"],
                "thermal_model": thermal_model, "identity_encoder": encoder.name,
                "identity_guidance": identity_guidance, "thermosynth": __version__}
    with tqdm(total=len(todo), desc="synthesize faces") as progress, (out / METADATA).open("a") as metadata:
        for batch in batches:
            if all(job.name in done for job in batch):
                continue
            captions = [face_caption(job.view) for job in batch]
            visible, thermal = pipeline(
                torch.from_numpy(np.stack([vectors[job.person] for job in batch])), [job.view for job in batch],
                captions, generator=[torch.Generator().manual_seed(job.seed) for job in batch],
                num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                thermal_inference_steps=thermal_inference_steps, thermal_guidance_scale=thermal_guidance_scale,
                identity_guidance=identity_guidance)
            for job, caption, face, heat in zip(batch, captions, visible, thermal, strict=True):
                if job.name in done:  # made again only to keep the batch as it was
                    continue
                atomic_write(out / "visible" / f"{job.name}.png", lambda tmp, im=face: im.save(tmp, format="PNG"))
                atomic_write(out / "thermal" / f"{job.name}.png", lambda tmp, im=heat: im.save(tmp, format="PNG"))
                metadata.write(json.dumps({"file_name": f"visible/{job.name}.png",
                                           "thermal_file_name": f"thermal/{job.name}.png", "person": job.person,
                                           "view": job.view, "k": job.k, "seed": job.seed, "caption": caption,
                                           **versions}) + "\n")
                metadata.flush()
                os.fsync(metadata.fileno())
                progress.update(1)
    return {"written": len(todo), "already_done": len(jobs) - len(todo), "people": len(vectors),
            "skipped_people": len(skipped)}
