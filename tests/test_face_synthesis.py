"""LaPIG's face generator and paired data set synthesis (Algorithm 1), with tiny random models."""

import copy
import json
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from thermosynth.data.errors import DataError
from thermosynth.data.faces import face_caption
from thermosynth.models.identity import FaceIdentity

from conftest import SHARED_DATA, requires_shared_data, tiny_face_pipeline


@pytest.fixture(scope="module")
def face_pipeline():
    """A tiny random face generator taking 16-d identities, without a frontal template (no identity guidance)."""
    return tiny_face_pipeline(16)


def _faces(pipeline, identity, views, guidance=2.0, seed=0):
    return pipeline(identity, views, num_inference_steps=2, guidance_scale=guidance,
                    generator=torch.Generator().manual_seed(seed), output_type="pt").images


def test_face_pipeline_conditions_on_identity_and_view_and_round_trips(face_pipeline, tmp_path):
    from thermosynth.models.identity import ID_PROMPT, IdentityInjection
    from thermosynth.pipelines import load_face_pipeline

    identity = torch.randn(2, 16)
    # MiniLM attends both ways, so the identity prompt is not padded to the tokenizer's 256 (CLIP's is, to 77)
    states = IdentityInjection(face_pipeline.tokenizer, face_pipeline.text_encoder)(identity)
    assert states.shape == (2, len(face_pipeline.tokenizer(ID_PROMPT).input_ids), 384)
    made = _faces(face_pipeline, identity, ["frontal", "profile_left"])
    assert made.shape == (2, 3, 32, 32) and made.min() >= -1 and made.max() <= 1
    assert torch.equal(made, _faces(face_pipeline, identity, ["frontal", "profile_left"]))  # seeded
    assert not torch.allclose(made, _faces(face_pipeline, -identity, ["frontal", "profile_left"]))  # identity
    assert not torch.allclose(made[:1], _faces(face_pipeline, identity[:1], "profile_right"))  # view
    assert _faces(face_pipeline, identity, "frontal", guidance=1.0).shape == (2, 3, 32, 32)  # no guidance
    pictures = face_pipeline(identity[0].numpy(), num_inference_steps=1).images  # one (d,) vector, PIL out
    assert len(pictures) == 1 and pictures[0].size == (32, 32) and pictures[0].mode == "RGB"

    face_pipeline.save_pretrained(tmp_path / "faces")
    loaded = load_face_pipeline(str(tmp_path / "faces"))
    loaded.set_progress_bar_config(disable=True)
    assert loaded.vae is None and loaded.config.identity_dim == 16
    assert torch.equal(made, _faces(loaded, identity, ["frontal", "profile_left"]))
    with pytest.raises(ValueError, match=r"\(B, 16\)"):
        face_pipeline(torch.randn(2, 12))
    with pytest.raises(ValueError, match="unknown view"):
        face_pipeline(identity, "upside_down")
    with pytest.raises(ValueError, match="one per identity"):
        face_pipeline(identity, ["frontal"] * 3)


def test_identity_and_view_reach_the_time_embedding(face_pipeline):
    """thermosynth's face UNet takes [identity vector, view one-hot] as class labels, and they move its prediction
    with the cross-attention states held fixed; UNets with view classes take indices; Arc2Face's UNet takes none."""
    from types import SimpleNamespace

    from thermosynth.pipelines.faces import face_class_labels

    identity = torch.randn(2, 16)
    labels = face_class_labels(face_pipeline.unet.config, identity, ["profile_right", "frontal"])
    assert torch.equal(labels[:, :16], identity)
    assert torch.equal(labels[:, 16:], torch.tensor([[0.0, 0, 1], [1, 0, 0]]))
    unet, sample, states = face_pipeline.unet, torch.randn(2, 3, 32, 32), torch.randn(2, 5, 384)
    with torch.no_grad():
        made = [unet(sample, 500, encoder_hidden_states=states,
                     class_labels=face_class_labels(unet.config, v, ["frontal"] * 2)).sample
                for v in (identity, -identity)]
    assert not torch.allclose(made[0], made[1])
    classes = SimpleNamespace(class_embed_type=None, num_class_embeds=3)
    assert face_class_labels(classes, identity, ["profile_left", "frontal"]).tolist() == [1, 0]
    assert face_class_labels(SimpleNamespace(class_embed_type=None, num_class_embeds=None), identity,
                             ["frontal"] * 2) is None
    with pytest.raises(ValueError, match="unknown view"):
        face_class_labels(classes, identity, ["frontal", "sideways"])


def test_arc2face_and_longclip_weights_run_in_the_face_pipeline(tmp_path):
    """Arc2Face's layout (random weights at small widths) with a LongCLIP caption encoder (transformers' layout, 248
    positions) drives IdentityFacePipeline in latent space, as LaPIG combines them: no view classes, so the view
    reaches the UNet in the caption, and a caption past CLIP's 77 tokens is read whole."""
    import warnings

    from diffusers import DDIMScheduler

    from thermosynth.models.identity import load_arc2face
    from thermosynth.models.text_encoders import PromptTruncatedWarning
    from thermosynth.pipelines import IdentityFacePipeline

    from conftest import clip_tokenizer_with_id, small_clip_text_model, write_arc2face_layout

    weights, base = write_arc2face_layout(tmp_path)
    long_tokenizer = clip_tokenizer_with_id(max_length=248)
    long_tokenizer.save_pretrained(tmp_path / "longclip")
    small_clip_text_model(long_tokenizer, positions=248).save_pretrained(tmp_path / "longclip")
    parts = load_arc2face(str(weights), str(base), long_clip=str(tmp_path / "longclip"))
    assert parts["caption_encoder"].config.max_position_embeddings == 248
    pipeline = IdentityFacePipeline(**{**parts, "scheduler": DDIMScheduler.from_config(parts["scheduler"].config)},
                                    image_size=64, identity_dim=16)
    pipeline.set_progress_bar_config(disable=True)
    long_caption = "a photo of a face, profile view, facing left, " + "with short hair " * 15  # > 77 tokens
    assert 77 < len(long_tokenizer(long_caption).input_ids) <= 248
    with warnings.catch_warnings():
        warnings.simplefilter("error", PromptTruncatedWarning)
        made = pipeline(torch.randn(1, 16), "profile_left", long_caption, num_inference_steps=2,
                        generator=torch.Generator().manual_seed(0), output_type="pt").images
    assert made.shape == (1, 3, 64, 64)


class StubEncoder:
    """An identity encoder for tests: a vector from the photo's mean colour; grey photos have no face."""

    name = "stub"

    def encode(self, image, source="image", largest_face=False):
        mean = image.reshape(-1, 3).mean(axis=0)
        if np.ptp(mean) < 1:
            raise DataError(f"{source}: no face found.")
        vector = np.resize(mean, 16) - 100
        return FaceIdentity(vector / np.linalg.norm(vector), image, (0, 0, 1, 1), np.zeros((5, 2)))


@pytest.fixture
def people(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "people"
    for person, colour in (("ann", (200, 40, 40)), ("bob", (40, 200, 90)), ("cy", (60, 60, 220))):
        (root / person).mkdir(parents=True)
        for k in range(2):
            pixels = np.clip(np.array(colour) + rng.integers(-20, 20, (40, 40, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / person / f"{k}.png")
    (root / "nobody").mkdir()
    Image.new("RGB", (40, 40), (128, 128, 128)).save(root / "nobody" / "grey.png")
    return root


def _pairs(out):
    lines = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    files = {f"{sub}/{p.name}": p.read_bytes()
             for sub in ("visible", "thermal") for p in sorted((out / sub).glob("*.png"))}
    return lines, files


def test_synthesize_writes_every_pair_once_and_resumes_after_a_kill(face_pipeline, tiny_pipeline, people, tmp_path,
                                                                    monkeypatch):
    from thermosynth import synthesize
    from thermosynth.pipelines import PairedFacePipeline

    tiny_pipeline.set_progress_bar_config(disable=True)
    paired = PairedFacePipeline(face_pipeline, tiny_pipeline)
    settings = dict(views=("frontal", "profile_right"), per_view=2, batch_size=3, face_model="tiny-faces",
                    thermal_model="tiny-v2t", num_inference_steps=2, thermal_inference_steps=2)
    whole = tmp_path / "whole"
    counts = synthesize.synthesize_faces(paired, people, whole, StubEncoder(), **settings)
    assert counts == {"written": 12, "already_done": 0, "people": 3, "skipped_people": 1}
    lines, files = _pairs(whole)
    assert len(lines) == 12 and len(files) == 24  # 3 people x 2 views x 2 samples x 2 modalities
    names = {line["file_name"] for line in lines}
    assert len(names) == 12 and {line["person"] for line in lines} == {"ann", "bob", "cy"}
    for line in lines:
        visible, thermal = Image.open(whole / line["file_name"]), Image.open(whole / line["thermal_file_name"])
        assert visible.mode == "RGB" and thermal.mode == "L" and visible.size == thermal.size == (32, 32)
        assert line["caption"] == face_caption(line["view"])
        assert line["face_model"] == "tiny-faces" and line["thermal_model"] == "tiny-v2t"
    skipped = [json.loads(line) for line in (whole / "skipped.jsonl").read_text().splitlines()]
    assert [s["person"] for s in skipped] == ["nobody"] and "no face" in skipped[0]["reasons"][0]

    # Killed while writing the thermal image of the 5th pair: 4 pairs recorded, one visible image orphaned.
    resumed = tmp_path / "resumed"
    written = []
    real_write = synthesize.atomic_write

    def dying_write(path, write):
        if path.parent.name == "thermal" and len(written) == 4:
            raise KeyboardInterrupt
        real_write(path, write)
        if path.parent.name == "thermal":
            written.append(path)

    monkeypatch.setattr(synthesize, "atomic_write", dying_write)
    with pytest.raises(KeyboardInterrupt):
        synthesize.synthesize_faces(paired, people, resumed, StubEncoder(), **settings)
    monkeypatch.setattr(synthesize, "atomic_write", real_write)
    assert len((resumed / "metadata.jsonl").read_text().splitlines()) == 4
    with (resumed / "metadata.jsonl").open("a") as f:
        f.write('{"file_name": "visible/ann_fr')  # and a line cut short
    counts = synthesize.synthesize_faces(paired, people, resumed, StubEncoder(), **settings)
    assert counts["written"] == 8 and counts["already_done"] == 4
    resumed_lines, resumed_files = _pairs(resumed)
    assert sorted(line["file_name"] for line in resumed_lines) == sorted(names)  # none lost, none twice
    assert resumed_files.keys() == files.keys()
    for sub in ("visible", "thermal"):  # the same images, however the batches fell
        for path in (whole / sub).glob("*.png"):
            same = np.asarray(Image.open(path)).astype(int) - np.asarray(Image.open(resumed / sub / path.name))
            assert np.abs(same).max() == 0, path.name  # each batch holds the same pairs as before
    assert not [p for p in resumed.rglob(".*") if p.is_file()]  # no temporary files left

    with pytest.raises(ValueError, match=r"other settings \(per_view differs"):
        synthesize.synthesize_faces(paired, people, resumed, StubEncoder(), **{**settings, "per_view": 3})
    retrained = copy.deepcopy(tiny_pipeline)  # the thermal model retrained under the same name
    with torch.no_grad():
        next(retrained.unet.parameters()).add_(1e-3)
    with pytest.raises(ValueError, match=r"other settings \(thermal_model_fingerprint differs"):
        synthesize.synthesize_faces(PairedFacePipeline(face_pipeline, retrained), people, resumed, StubEncoder(),
                                    **settings)
    assert {line["identity_guidance"] for line in lines} == {0.0}  # this model cannot be steered: off
    with pytest.raises(ValueError, match="no frontal_landmarks"):  # said before anything is written
        synthesize.synthesize_faces(paired, people, tmp_path / "steered", StubEncoder(), **settings,
                                    identity_guidance=0.1)
    assert not (tmp_path / "steered").exists()


def test_synthesize_refuses_a_folder_without_photos(tmp_path):
    from thermosynth.synthesize import read_people

    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no photos"):
        read_people(tmp_path / "empty")
    with pytest.raises(DataError, match="no such folder"):
        read_people(tmp_path / "missing")


def write_cfp_layout(root, identities=2):
    """CFP's layout with random photos: Data/Images/NNN/{frontal,profile}/01.png and Data/fiducials.csv."""
    rng = np.random.default_rng(0)
    rows = ["image," + ",".join(f"x{i},y{i}" for i in range(1, 31))]
    for identity in range(1, identities + 1):
        for folder in ("frontal", "profile"):
            name = f"{identity:03d}/{folder}/01.png"
            (root / "Data" / "Images" / name).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (40, 36, 3), dtype=np.uint8)).save(root / "Data" / "Images" / name)
            fiducials = rng.uniform(0, 36, (30, 2))
            fiducials[0, 0], fiducials[18:23, 0] = 5, 30  # a profile looking to the image's right
            rows.append(name + "," + ",".join(f"{v:.2f}" for v in fiducials.reshape(-1)))
    (root / "Data" / "fiducials.csv").write_text("\n".join(rows) + "\n")
    return root


def test_face_captions_say_the_measured_view_then_the_vlm_sentence(tiny_captioner_dir, tmp_path):
    from thermosynth.cli import main

    root = write_cfp_layout(tmp_path / "cfp")
    main(["caption", "--faces", str(root), "--out", str(tmp_path / "measured")])
    measured = {e["file_name"]: e["text"] for e in map(json.loads, (tmp_path / "measured" / "metadata.jsonl").open())}
    assert measured == {
        "../cfp/Data/Images/001/frontal/01.png": "a photo of a face, frontal view",
        "../cfp/Data/Images/001/profile/01.png": "a photo of a face, profile view, facing right",
        "../cfp/Data/Images/002/frontal/01.png": "a photo of a face, frontal view",
        "../cfp/Data/Images/002/profile/01.png": "a photo of a face, profile view, facing right",
    }
    main(["caption", "--faces", str(root), "--out", str(tmp_path / "vlm"), "--vlm", str(tiny_captioner_dir),
          "--batch-size", "3"])
    described = {e["file_name"]: e["text"] for e in map(json.loads, (tmp_path / "vlm" / "metadata.jsonl").open())}
    assert described.keys() == measured.keys()
    for name, text in described.items():  # the measured part first, then whatever the (random) VLM said
        assert text.startswith(measured[name]) and len(text) > len(measured[name]) + 2


@requires_shared_data("cfp")
def test_train_faces_on_a_few_cfp_identities_then_synthesize(tmp_path):
    """`train faces` (tiny preset, 3 CFP identities, 6 steps, measured captions, identity loss) exports a face
    pipeline, and `synthesize faces` turns it and a V2T model into pairs through the command line."""
    from thermosynth.cli import main
    from thermosynth.models.text_encoders import _minilm_path

    run = tmp_path / "run"
    main(["caption", "--faces", str(SHARED_DATA / "cfp"), "--out", str(tmp_path / "captions")])
    encoder = shutil.copytree(_minilm_path(), tmp_path / "text-encoder")  # a text encoder given as a folder
    main(["train", "faces", "--data", str(SHARED_DATA / "cfp"), "--identities", "1", "3", "--steps", "6",
          "--captions", str(tmp_path / "captions" / "metadata.jsonl"), "--identity-loss-weight", "0.1",
          "--text-encoder", str(encoder), "--out", str(run)])
    config = json.loads((run / "config.json").read_text())
    assert config["task"] == "faces" and config["identities"] == [1, 3] and config["identity_loss_weight"] == 0.1
    assert config["text_encoder"] == str(encoder)
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any(0 < m.get("identity_cos", 0) <= 1 and "identity_gap" in m for m in logged)  # the identity loss ran
    assert (run / "pipeline" / "model_index.json").is_file() and (run / "identity_vectors.safetensors").is_file()
    assert list((run / "samples").glob("*.png"))
    people = tmp_path / "people"
    people.mkdir()
    os.symlink(SHARED_DATA / "cfp" / "Data" / "Images" / "451" / "frontal", people / "451")
    main(["synthesize", "faces", str(people), "--model", str(run / "pipeline"), "--thermal-model", "v2t-roadscene",
          "--out", str(tmp_path / "pairs"), "--views", "frontal", "profile_left", "--steps", "2",
          "--thermal-steps", "2"])
    lines = (tmp_path / "pairs" / "metadata.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["view"] for line in lines) == ["frontal", "profile_left"]
    template = json.loads((run / "pipeline" / "model_index.json").read_text())["frontal_landmarks"]
    assert np.array(template).shape == (5, 2) and 0 < np.min(template) and np.max(template) < 64  # where faces sit
    assert {json.loads(line)["identity_guidance"] for line in lines} == {0.1}  # steered by default
