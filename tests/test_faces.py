"""LaPIG's face half (identity-conditioned generation): identity injection into the text encoder."""

import copy

import numpy as np
import pytest
import torch

from thermosynth.models.identity import ID_PROMPT, IdentityInjection

from conftest import SHARED_DATA, byte_level_clip_vocab, requires_shared_data


@pytest.fixture(scope="module")
def clip_with_id_token():
    """A random CLIP text model (width 48) whose tokenizer reads `id` as one token, as CLIP's own vocabulary does."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    vocab = byte_level_clip_vocab()
    vocab["id</w>"] = len(vocab)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[("i", "d</w>")], model_max_length=77)
    torch.manual_seed(0)
    model = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=48, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )).eval()
    return tokenizer, model


def test_the_identity_vector_sits_where_the_id_token_was(clip_with_id_token):
    tokenizer, model = clip_with_id_token
    inject = IdentityInjection(tokenizer, model)
    identity = torch.randn(2, 16) * 3  # e.g. SFace's 128-d in a 768-d CLIP: here 16-d into 48
    with torch.no_grad():
        states = inject(identity)
    ids = tokenizer([ID_PROMPT], padding="max_length", max_length=77, return_tensors="pt").input_ids
    padded = inject.padded(identity)
    assert torch.allclose(padded[:, :16].norm(dim=1), torch.ones(2)) and torch.all(padded[:, 16:] == 0)
    for row in range(2):  # the same as a text encoder whose `id` embedding row were this identity
        edited = copy.deepcopy(model)
        edited.get_input_embeddings().weight.data[inject.token_id] = padded[row]
        with torch.no_grad():
            expected = edited(input_ids=ids).last_hidden_state[0]
        torch.testing.assert_close(states[row], expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(states[0], states[1], atol=1e-3)  # the identity changes the token states
    with torch.no_grad():
        plain = model(input_ids=ids).last_hidden_state[0]
        assert not torch.allclose(states[0], plain, atol=1e-3)
        torch.testing.assert_close(model(input_ids=ids).last_hidden_state[0], plain)  # the hook was removed


def test_identity_injection_refuses_what_it_cannot_place(clip_with_id_token):
    tokenizer, model = clip_with_id_token
    inject = IdentityInjection(tokenizer, model)
    with pytest.raises(ValueError, match="exactly once"):
        inject(torch.randn(1, 16), prompt="photo of a person")
    with pytest.raises(ValueError, match="d <= 48"):
        inject(torch.randn(1, 64))
    with pytest.raises(ValueError, match="one"):
        IdentityInjection(tokenizer, model, token="identity")


def test_pose_loss_is_minus_the_sum_of_ssim_on_a_hand_made_case():
    """Flat images: SSIM reduces to its luminance term (2 a b + C1) / (a^2 + b^2 + C1), C1 = (0.01 * 1)^2, exactly."""
    from thermosynth.training.faces import pose_loss

    levels = [(0.5, 0.25), (0.8, 0.8), (0.1, 0.6), (0.3, 0.35)]  # on the 0..1 scale
    reference = torch.stack([torch.full((3, 24, 24), a, dtype=torch.float64) for a, _ in levels]) * 2 - 1
    generated = torch.stack([torch.full((3, 24, 24), b, dtype=torch.float64) for _, b in levels]) * 2 - 1
    c1 = 0.01**2
    expected = -sum((2 * a * b + c1) / (a * a + b * b + c1) for a, b in levels)
    assert pose_loss(reference, generated).item() == pytest.approx(expected, rel=1e-9)
    assert pose_loss(reference.float(), generated.float()).item() == pytest.approx(expected, rel=1e-3)
    assert pose_loss(reference, reference).item() == pytest.approx(-4.0, rel=1e-6)  # identical poses: -N
    generated.requires_grad_(True)
    pose_loss(reference, generated).backward()
    assert generated.grad.abs().sum() > 0


def test_views_from_five_landmarks_and_from_cfp_fiducials():
    from thermosynth.data.faces import view_from_cfp_fiducials, view_from_landmarks

    eyes_mouth = [[40, 50], [80, 50], [0, 0], [45, 90], [75, 90]]
    for nose_x, view in [(60, "frontal"), (66, "frontal"), (70, "profile_right"), (45, "profile_left")]:
        points = np.array(eyes_mouth, float)
        points[2] = (nose_x, 70)
        assert view_from_landmarks(points) == view
    fiducials = np.zeros((30, 2))
    fiducials[0] = (20, 50)  # by the ear
    fiducials[18:23, 0] = 90  # the nose, to the image's right of it
    assert view_from_cfp_fiducials(fiducials, profile=True) == "profile_right"
    fiducials[0] = (120, 50)
    assert view_from_cfp_fiducials(fiducials, profile=True) == "profile_left"
    assert view_from_cfp_fiducials(fiducials, profile=False) == "frontal"


@requires_shared_data("cfp")
def test_cfp_reader_gives_identities_and_views():
    from thermosynth.data.faces import read_cfp

    root = SHARED_DATA / "cfp"
    photos = read_cfp(root)
    assert len(photos) == 7000 and len({p.identity for p in photos}) == 500
    counts = {view: sum(p.view == view for p in photos) for view in ("frontal", "profile_left", "profile_right")}
    assert counts["frontal"] == 5000 and counts["profile_left"] > 500 and counts["profile_right"] > 500
    held_out = read_cfp(root, identities=range(451, 501))
    assert {p.identity for p in held_out} == set(range(451, 501)) and len(held_out) == 50 * 14


def test_arc2face_layout_round_trips_and_conditions_the_unet(tmp_path):
    """Random models saved as Arc2Face publishes its weights (arc2face/ UNet, encoder/ CLIP, SD-1.5's tensor names at
    small widths) beside an SD-1.5 layout: load_arc2face reads every tensor back, and the injected identity reaches
    the UNet's output."""
    from safetensors.torch import load_file

    from thermosynth.models.identity import load_arc2face

    from conftest import write_arc2face_layout

    weights, base = write_arc2face_layout(tmp_path)
    parts = load_arc2face(str(weights), str(base))
    saved = load_file(weights / "encoder" / "model.safetensors")
    loaded = parts["text_encoder"].state_dict()
    assert all(torch.equal(loaded[name], tensor) for name, tensor in saved.items())
    saved = load_file(weights / "arc2face" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(parts["unet"].state_dict()[name], tensor) for name, tensor in saved.items())

    inject = IdentityInjection(parts["tokenizer"], parts["text_encoder"])
    sample = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        made = [parts["unet"](sample, 500, encoder_hidden_states=inject(torch.randn(1, 16))).sample for _ in "ab"]
    assert not torch.allclose(made[0], made[1])  # another identity, another prediction
    with pytest.raises(ValueError, match="not Arc2Face's weights"):
        load_arc2face(str(base), str(base))


def test_identity_vectors_average_frontal_photos_list_the_unreadable_and_cache(tmp_path):
    from PIL import Image

    from thermosynth.data.errors import DataError
    from thermosynth.data.faces import FacePhoto, identity_vectors
    from thermosynth.models.identity import FaceIdentity

    photos = []
    for identity, view, name in [(1, "frontal", "a"), (1, "frontal", "b"), (1, "profile_left", "c"),
                                 (2, "frontal", "d"), (2, "frontal", "blank"), (3, "frontal", "blank2")]:
        path = tmp_path / f"{name}.png"
        Image.new("RGB", (8, 8), (10 * identity, 0, 0)).save(path)
        photos.append(FacePhoto(path, identity, view))

    class FakeEncoder:
        name, calls = "fake", 0

        def encode(self, image, source, largest_face=False):
            self.calls += 1
            if "blank" in source:
                raise DataError(f"{source}: no face found.")
            vector = np.eye(4)[image[0, 0, 0] // 10] + (0.5 if source.endswith("b.png") else 0) * np.eye(4)[0]
            return FaceIdentity(vector / np.linalg.norm(vector), image, (0, 0, 8, 8), np.zeros((5, 2)))

    encoder = FakeEncoder()
    found = identity_vectors(photos, encoder, cache=tmp_path / "ids.safetensors")
    assert encoder.calls == 5  # frontal photos only
    assert sorted(found.vectors) == [1, 2]  # identity 3 had no readable photo
    assert [p.name for p, _ in found.skipped] == ["blank.png", "blank2.png"]
    e = np.eye(4)
    mean = e[1] + (e[1] + 0.5 * e[0]) / np.linalg.norm(e[1] + 0.5 * e[0])
    np.testing.assert_allclose(found.vectors[1], mean / np.linalg.norm(mean), rtol=1e-6)
    assert sorted(p.name for p in found.by_photo) == ["a.png", "b.png", "d.png"]  # each readable frontal photo's own
    np.testing.assert_allclose(found.by_photo[photos[1].path], (e[1] + 0.5 * e[0]) / np.linalg.norm(e[1] + 0.5 * e[0]),
                               rtol=1e-6)
    again = identity_vectors(photos, encoder, cache=tmp_path / "ids.safetensors")
    assert encoder.calls == 5 and [p for p, _ in again.skipped] == [p for p, _ in found.skipped]  # from the cache
    np.testing.assert_array_equal(again.vectors[1], found.vectors[1])
    assert all(np.array_equal(again.by_photo[p], v) for p, v in found.by_photo.items())
    identity_vectors(photos[:4], encoder, cache=tmp_path / "ids.safetensors")
    assert encoder.calls == 8  # other photos: computed again
    identity_vectors(photos[:4], encoder, cache=tmp_path / "ids.safetensors", largest_face=False)
    assert encoder.calls == 11  # another way of picking faces: computed again


def test_face_images_fit_mirror_and_swap_profiles(tmp_path):
    from dataclasses import replace

    from PIL import Image

    from thermosynth.data.faces import VIEW_INDEX, FaceImages, FacePhoto, IdentityVectors

    rng = np.random.default_rng(0)
    photos = []
    for n, (identity, view, size) in enumerate([(1, "frontal", (90, 120)), (1, "profile_left", (128, 100)),
                                                (2, "profile_right", (64, 64)), (3, "frontal", (80, 80))]):
        path = tmp_path / f"{n}.png"
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
        photos.append(FacePhoto(path, identity, view))
    own = np.array([0.6, 0.8, 0, 0])  # the frontal photo of identity 1 has its own vector; its profile, the mean
    vectors = IdentityVectors({1: np.eye(4)[0], 2: np.eye(4)[1]}, [], "fake", {photos[0].path: own})  # 3: none
    data = FaceImages(photos, vectors, size=32)
    assert len(data) == 3 and data.left_out == [3] and data.images.shape == (3, 32, 32, 3)
    assert data.frontal_template() is None  # no photo with landmarks: nothing to steer identity guidance by
    points = np.array([[40.0, 30], [80, 30], [60, 50], [45, 70], [75, 70]])  # photo 0: 120 wide, 90 high
    with_points = FaceImages(photos, replace(vectors, landmarks={photos[0].path: points}), size=32)
    # fitted: 90 -> 32 high, 120 -> 43 wide, 5 columns cropped on the left
    expected = points * [43 / 120, 32 / 90] - [5, 0]
    assert np.allclose(with_points.frontal_template(), expected, atol=1e-4)
    assert torch.equal(data.vectors[:2], torch.tensor([own, np.eye(4)[0]]).float())
    batch = data.sample(64, torch.Generator().manual_seed(0))
    assert batch["images"].shape == (64, 3, 32, 32) and batch["images"].abs().max() <= 1
    again = data.sample(64, torch.Generator().manual_seed(0))
    assert all(torch.equal(batch[k], again[k]) for k in batch)  # reproducible from the generator
    index = int(torch.nonzero(data.identities == 2)[0])  # the one right-profile photo
    plain = data.images[index].permute(2, 0, 1).float() / 127.5 - 1
    seen = set()
    for image, view in zip(batch["images"][batch["identities"] == 2], batch["views"][batch["identities"] == 2],
                           strict=True):
        mirrored = not torch.allclose(image, plain, atol=1e-6)
        assert torch.allclose(image, plain.flip(-1) if mirrored else plain, atol=1e-6)
        assert int(view) == VIEW_INDEX["profile_left" if mirrored else "profile_right"]  # mirroring swaps profiles
        seen.add(mirrored)
    assert seen == {True, False}
    identity_two = batch["identities"] == 2
    assert identity_two.any() and torch.equal(batch["identity_vectors"][identity_two][0], torch.eye(4)[1])
