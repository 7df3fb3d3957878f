"""Identity preservation of thermosynth's face generator on CFP's held-out identities (LaPIG's measurement).

    thermosynth train faces --data ../shared/data/cfp --identities 1 450 --preset small --time-budget 60 \
        --out runs/faces-cfp
    python benchmarks/faces/run.py ../shared/data/cfp runs/faces-cfp benchmarks/faces --look runs/faces-look

The generator is trained on CFP identities 1-450 (SFace vectors). For each of identities 451-500 it gets the SFace
vector of ONE frontal photo (the first one SFace reads) and makes frontal, left-profile and right-profile faces
(--per-view of each, from different noise). dlib's face recogniser, trained apart from SFace, then verifies each
generated face against the person's other real frontal photos (the gallery: every real frontal photo of identities
451-500 but the conditioning one):

- VR at FAR 1% and 0.1%: thresholds set on impostor pairs (a probe against other people's gallery photos), VR the
  share of genuine pairs above them; Rank-1: the nearest gallery photo is the person's own.
- A probe in which dlib finds no face cannot verify: it counts as a failed genuine pair and a Rank-1 miss (the
  rates "over all probes"); the rates over detected probes alone are given too.
- The faces are sampled as the pipeline samples by default: with identity guidance where the model allows it (SFace's
  gradient steering the frontal faces, pipelines/identity_guidance.py; `--identity-guidance 0` turns it off). With
  it on, the same faces without it are measured too: what the UNet alone gives.
- Controls from the same run: the same generator with the identity vector zeroed (what it makes for no one in
  particular: near chance, i.e. VR close to the FAR), real vs real (the conditioning photo as a frontal probe, the
  person's four profile photos as profile probes): the ceiling, and the same real probes shrunk to the generator's
  size as it sees its training photos, then enlarged as its faces are: the ceiling for a perfect generator of that
  size.

Generated faces (64 px) are enlarged to 128 px (bicubic) before dlib, CFP's photo size (dlib's HOG detector finds
faces down to ~80 px, ~40 px with the one upsampling the encoder does). Writes results.json and grid.png
(generated faces only, one row a held-out person: frontal, left profile, right profile, then the zero-identity
frontal; CFP's photos are never copied into the repository) into OUT, and prints the table RESULTS.md quotes; with
--look, the same grid beside each person's conditioning photo goes there, outside the repository, to look at.

`--identities 1 50` runs the same measurement on training people instead (a diagnostic, not the protocol: their
gallery photos were trained on): whether the generator learnt who its own training people are at all.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from thermosynth.data.augment import fit_to_size
from thermosynth.data.errors import DataError
from thermosynth.data.images import read_visible
from thermosynth.environment import describe
from thermosynth.evaluation.faces import verification_metrics
from thermosynth.models.identity import make_identity_encoder
from thermosynth.pipelines import load_face_pipeline, prepare_for_inference
from thermosynth.render import image_grid

HELD_OUT = (451, 500)  # CFP identities the generator never saw (it trains on 1-450)
VIEWS = ("frontal", "profile_left", "profile_right")
DLIB_SIZE = 128


def conditioning_photos(photos, encoder) -> dict[int, tuple[Path, np.ndarray]]:
    """Per held-out identity: its first frontal photo with a face the conditioning encoder reads, and the vector."""
    chosen = {}
    for photo in photos:
        if photo.view != "frontal" or photo.identity in chosen:
            continue
        try:
            chosen[photo.identity] = (photo.path, encoder.encode(read_visible(photo.path), str(photo.path),
                                                                 largest_face=True).vector.astype(np.float32))
        except DataError:
            continue
    return chosen


def generate(pipeline, vectors: np.ndarray, views: list[str], steps: int, guidance: float, seed: int,
             batch_size: int, identity_guidance: float | None) -> list[Image.Image]:
    made = []
    for start in tqdm(range(0, len(views), batch_size), desc="generate", leave=False):
        rows = range(start, min(start + batch_size, len(views)))
        made += pipeline(torch.from_numpy(vectors[list(rows)]), [views[i] for i in rows], num_inference_steps=steps,
                         guidance_scale=guidance, identity_guidance=identity_guidance,
                         generator=[torch.Generator().manual_seed(seed + i) for i in rows]).images
    return made


def embed(dlib, images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """dlib vectors of the images that have a face (largest one), and which images had one."""
    vectors, found = [], []
    for image in images:
        try:
            vectors.append(dlib.encode(image, largest_face=True).vector)
            found.append(True)
        except DataError:
            found.append(False)
    return np.array(vectors).reshape(-1, 128), np.array(found)


def scores(probes: list[np.ndarray], probe_ids: np.ndarray, gallery: np.ndarray, gallery_ids: np.ndarray,
           dlib) -> dict[str, float]:
    vectors, found = embed(dlib, probes)
    result = {"probes": len(probes), "detected": float(found.mean())}
    if found.sum() == 0:
        return {**result, "rank1": 0.0, "vr@far=1%": 0.0, "vr@far=0.1%": 0.0}
    detected = verification_metrics(vectors, probe_ids[found], gallery, gallery_ids)
    for key in ("rank1", "vr@far=1%", "vr@far=0.1%"):
        result[key] = detected[key] * found.mean()  # an undetected probe is a miss
        result[f"{key} (detected only)"] = detected[key]
    result["far_resolution"] = detected["far_resolution"]
    return result


def enlarge(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB").resize((DLIB_SIZE, DLIB_SIZE), resample=Image.BICUBIC))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cfp", help="CFP's folder (Data/, Protocol/)")
    parser.add_argument("run", help="the `thermosynth train faces` run folder")
    parser.add_argument("out", help="where results.json, RESULTS.md and grid.png go")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance", type=float, default=2.0)
    parser.add_argument("--identity-guidance", type=float,
                        help="SFace identity guidance's step (default: the model's; 0: off)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scheduler", default="ddim", choices=("ddim", "dpm++"))
    parser.add_argument("--batch-size", type=int, default=30)
    parser.add_argument("--per-view", type=int, default=1, help="faces per person and view")
    parser.add_argument("--look", help="a folder outside the repository for a grid beside the real photos")
    parser.add_argument("--identities", type=int, nargs=2, default=HELD_OUT, metavar=("FIRST", "LAST"),
                        help="the CFP identities measured (default: the held-out %(default)s)")
    args = parser.parse_args()
    from thermosynth.data.faces import read_cfp

    started = time.perf_counter()
    run, out = Path(args.run), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config = json.loads((run / "config.json").read_text())
    trained = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    pipeline = prepare_for_inference(load_face_pipeline(str(run / "pipeline")), "cpu", args.scheduler)
    first, last = args.identities
    photos = read_cfp(args.cfp, range(first, last + 1))
    sface = make_identity_encoder(pipeline.config.identity_encoder)
    chosen = conditioning_photos(photos, sface)
    identities = sorted(chosen)
    print(f"{len(identities)} of identities {first}-{last} have a frontal photo SFace reads", flush=True)

    # Probes: per identity, one face per view, with its vector and with the vector zeroed.
    probe_ids = np.repeat(identities, len(VIEWS) * args.per_view)
    views = [v for _ in identities for v in VIEWS for _ in range(args.per_view)]
    vectors = np.stack([chosen[i][1] for i in probe_ids])
    sample = dict(steps=args.steps, guidance=args.guidance, seed=args.seed, batch_size=args.batch_size)
    identity_guidance = pipeline.identity_guidance(args.identity_guidance)
    generated = generate(pipeline, vectors, views, **sample, identity_guidance=args.identity_guidance)
    # The zero vector is no one in particular: identity guidance has no direction for it (a zero gradient).
    control = generate(pipeline, np.zeros_like(vectors), views, **sample, identity_guidance=0)
    # With identity guidance, the UNet's faces without it too: what training alone gives.
    unguided = (generate(pipeline, vectors, views, **sample, identity_guidance=0)
                if identity_guidance is not None else None)

    # How far the identity moves the generator: mean absolute pixel difference (0..255) from the zero-identity face
    # made from the same noise, per view.
    moved = {view: float(np.mean([np.abs(np.asarray(g, np.float32) - np.asarray(c, np.float32)).mean()
                                  for g, c, v in zip(generated, control, views, strict=True) if v == view]))
             for view in VIEWS}
    print("mean |generated - zero identity| (0..255):", {k: round(v, 1) for k, v in moved.items()}, flush=True)

    dlib = make_identity_encoder("dlib")
    gallery_photos = [p for p in photos if p.view == "frontal" and p.identity in chosen
                      and p.path != chosen[p.identity][0]]
    gallery, found = embed(dlib, [read_visible(p.path) for p in tqdm(gallery_photos, desc="gallery", leave=False)])
    gallery_ids = np.array([p.identity for p in gallery_photos])[found]
    print(f"gallery: {len(gallery)} of {len(gallery_photos)} real frontal photos with a dlib face", flush=True)

    frontal = np.array([v == "frontal" for v in views])
    real_profiles = [p for p in photos if p.view != "frontal" and p.identity in chosen]
    results = {"frontal": {}, "profile": {}}
    made = {"generated": generated, "zero identity": control}
    if unguided is not None:
        made = {"generated": generated, "generated without identity guidance": unguided, "zero identity": control}
    for name, images in made.items():
        enlarged = [enlarge(im) for im in images]
        results["frontal"][name] = scores([e for e, f in zip(enlarged, frontal, strict=True) if f],
                                          probe_ids[frontal], gallery, gallery_ids, dlib)
        results["profile"][name] = scores([e for e, f in zip(enlarged, frontal, strict=True) if not f],
                                          probe_ids[~frontal], gallery, gallery_ids, dlib)
    # Real probes, as they are (the ceiling) and shrunk to the generator's size as its training photos are, then
    # enlarged as its faces are (the ceiling for a perfect generator of that size).
    size = pipeline.config.image_size
    real_probes = {"frontal": ([chosen[i][0] for i in identities], np.array(identities)),
                   "profile": ([p.path for p in real_profiles], np.array([p.identity for p in real_profiles]))}
    for view, (paths, ids) in real_probes.items():
        images = [read_visible(path) for path in paths]
        results[view]["real vs real"] = scores(images, ids, gallery, gallery_ids, dlib)
        shrunk = [enlarge(Image.fromarray(fit_to_size(image, (size, size))[0])) for image in images]
        results[view][f"real at {size} px vs real"] = scores(shrunk, ids, gallery, gallery_ids, dlib)
    seconds = time.perf_counter() - started
    training_s = max((m.get("elapsed_s", 0) for m in trained), default=0)
    summary = {
        "results": results,
        "measured_identities": [first, last],
        "identities_with_a_vector": len(identities),
        "identity_moves_pixels": moved,
        "training": {"identities": config["identities"], "steps": config["steps"], "batch_size": config["batch_size"],
                     "architecture": config["architecture"], "image_size": config["image_size"],
                     "minutes": round(training_s / 60, 1), "pose_loss_weight": config["pose_loss_weight"],
                     # runs before the identity loss existed have no such field: they trained without it
                     "identity_loss_weight": config.get("identity_loss_weight", 0.0)},
        "sampling": {"per_view": args.per_view, "steps": args.steps, "guidance": args.guidance, "seed": args.seed,
                     "scheduler": args.scheduler,
                     "identity_guidance": identity_guidance.scale if identity_guidance is not None else 0.0},
        "evaluation_minutes": round(seconds / 60, 1),
        "environment": describe(),
        "command": "python " + " ".join(sys.argv),
    }
    (out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")

    per_person = len(VIEWS) * args.per_view  # probes per person; the grid shows each view's first
    rows = [[np.asarray(generated[k * per_person + j * args.per_view]) for j in range(len(VIEWS))]
            + [np.asarray(control[k * per_person])] for k in range(min(10, len(identities)))]
    image_grid(rows).save(out / "grid.png")
    if args.look:
        look = Path(args.look)
        look.mkdir(parents=True, exist_ok=True)
        real = [np.asarray(Image.open(chosen[i][0]).convert("RGB").resize((64, 64))) for i in identities[:10]]
        image_grid([[r, *row] for r, row in zip(real, rows, strict=False)]).save(look / "grid-with-real.png")

    table = ["| view | probes | dlib finds a face | VR@FAR1% | VR@FAR0.1% | Rank-1 |", "|---|---|---|---|---|---|"]
    for view, by_kind in results.items():
        for kind, r in by_kind.items():
            table.append(f"| {view}: {kind} | {r['probes']} | {r['detected']:.0%} | {r['vr@far=1%']:.3f} | "
                         f"{r['vr@far=0.1%']:.3f} | {r['rank1']:.3f} |")
    print("\n".join(table))
    print(json.dumps(summary["training"]), f"evaluation {seconds / 60:.1f} min")


if __name__ == "__main__":
    main()
