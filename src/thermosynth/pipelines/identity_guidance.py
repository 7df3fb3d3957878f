"""Identity guidance: steering a face generator's sampling towards a person with SFace's gradient.

An hour of training on two CPU cores teaches the face generator what a face is, not who (benchmarks/faces/
RESULTS.md): its faces ignore the identity vector. Identity guidance puts the person in at sampling time, as
FreeDoM (Yu et al. 2023) does with a face recogniser's distance as its energy: at each denoising step with
t >= T_MIN, the clean face the sampler predicts, x0_hat, takes STEPS gradient steps up SFace's cosine with the
person's vector, each of RMS size `scale` (pixels in [-1, 1]), and the sampler goes on from the moved face with the
noise it predicted (MPGD's step in x0, He et al. 2024: x_{t-1} = sqrt(abar_{t-1}) x0' + sqrt(1 - abar_{t-1}) eps_hat,
which the scheduler takes from the prediction and sample rewritten for x0', `steer`).

Three choices keep the steps from becoming a pattern that only SFace sees, measured on training identities 401-430
(benchmarks/faces/RESULTS.md): the gradient is blurred (Gaussian, BLUR_SIGMA pixels) and read with the face shifted
by up to SHIFT pixels (expectation over small translations), and guidance stops at T_MIN so that the last steps
denoise the face without it. The face is aligned for SFace with one fixed template, the mean landmarks of the
generator's frontal training photos (its config's `frontal_landmarks`), never the person's photo's landmarks, whose
geometry is part of who they are. SFace reads frontal faces: profile views are not steered.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from thermosynth.training.diffusion import predicted_x0, prediction_target, signal_level

STEPS = 2  # gradient steps on x0_hat per denoising step
T_MIN = 400  # the last steps (t < T_MIN, of 1000) denoise without guidance
BLUR_SIGMA = 1.0  # pixels of the generated face
SHIFT = 2  # pixels, each way


def blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """A separable Gaussian blur of (B, C, H, W), borders reflected."""
    radius = max(1, int(3 * sigma))
    taps = torch.exp(-torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device) ** 2
                     / (2 * sigma ** 2))
    taps = (taps / taps.sum()).repeat(images.shape[1], 1, 1, 1)  # (C, 1, 1, K): one kernel per channel
    rows = F.conv2d(F.pad(images, (radius, radius, 0, 0), mode="reflect"), taps, groups=images.shape[1])
    return F.conv2d(F.pad(rows, (0, 0, radius, radius), mode="reflect"), taps.transpose(2, 3), groups=images.shape[1])


class IdentityGuidance:
    """Moves predicted clean faces towards identity vectors. `sface`: models.sface_network.SFaceNetwork; `theta`:
    the (2, 3) alignment of the generator's frontal template (sface_network.alignment_theta); `scale`: RMS size of one
    gradient step, in [-1, 1] pixels."""

    def __init__(self, sface, theta: torch.Tensor, scale: float):
        if scale <= 0:
            raise ValueError(f"identity guidance scale must be > 0, got {scale}")
        self.sface, self.theta, self.scale = sface, theta, scale

    def cosines(self, faces: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """SFace's cosine between each face (B, 3, S, S) in [-1, 1], aligned by the template, and its target (B, d)."""
        from thermosynth.models.sface_network import align_for_sface

        made = F.normalize(self.sface(align_for_sface(faces, self.theta.expand(len(faces), 2, 3))), dim=1)
        return (made * F.normalize(targets.to(made.dtype), dim=1)).sum(1)

    def move(self, x0: torch.Tensor, targets: torch.Tensor, step: int) -> torch.Tensor:
        """x0 (B, 3, S, S) after STEPS blurred, normalised gradient steps up the cosine with `targets` (B, d). The
        shifts are the same for every row and drawn from `step` alone, so a face does not depend on its batch."""
        shifts = torch.randint(-SHIFT, SHIFT + 1, (STEPS, 2), generator=torch.Generator().manual_seed(step)).tolist()
        for dy, dx in shifts:
            with torch.enable_grad():
                moving = x0.detach().float().requires_grad_(True)
                cosine = self.cosines(torch.roll(moving, (dy, dx), dims=(2, 3)), targets)
                (gradient,) = torch.autograd.grad(cosine.sum(), moving)
            gradient = blur(gradient, BLUR_SIGMA)
            gradient = gradient / gradient.flatten(1).pow(2).mean(1).sqrt().clamp(min=1e-12)[:, None, None, None]
            x0 = (x0.float() + self.scale * gradient).clamp(-1, 1).to(x0.dtype)
        return x0

    def steer(self, scheduler, sample: torch.Tensor, prediction: torch.Tensor, t, targets: torch.Tensor,
              rows: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The (sample, prediction) to hand the scheduler at timestep `t` so that its step starts from the moved
        x0_hat of the selected `rows` (B,) bool with a non-zero target, and the noise the UNet predicted: for those
        rows the sample is rewritten as sqrt(abar) x0' + sqrt(1 - abar) eps_hat and the prediction as the training
        target for x0' and eps_hat (the noise itself, or the velocity), a pair that implies x0' and eps_hat exactly.
        Unchanged for t < T_MIN."""
        rows = rows & (targets.norm(dim=1) > 0)  # the zero vector is no one in particular: nothing to steer to
        if int(t) < T_MIN or not rows.any():
            return sample, prediction
        timesteps = torch.full((int(rows.sum()),), int(t), device=sample.device, dtype=torch.long)
        x0 = predicted_x0(sample[rows], prediction[rows], timesteps, scheduler)
        abar = signal_level(scheduler, timesteps, sample)
        noise = (sample[rows] - abar.sqrt() * x0) / (1 - abar).sqrt()
        moved = self.move(x0.clamp(-1, 1), targets[rows], step)
        sample, prediction = sample.clone(), prediction.clone()
        sample[rows] = sample[rows] + abar.sqrt() * (moved - x0)  # = sqrt(abar) x0' + sqrt(1 - abar) eps_hat
        prediction[rows] = prediction_target(scheduler, moved, noise, timesteps)
        return sample, prediction
