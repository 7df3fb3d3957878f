"""Diffusion's noise schedules and training targets, one home for every model thermosynth trains: which schedule
(latent or pixel), what the UNet predicts (noise or velocity), and the clean image its prediction implies (the
x0_hat that the mask loss, T2IR Eq. 4, and the pose loss, LaPIG Eq. 3, score)."""

from __future__ import annotations

import torch
from diffusers import DDPMScheduler


def noise_schedule(num_train_timesteps: int = 1000, prediction_type: str = "epsilon") -> DDPMScheduler:
    """The DDPM training schedule: SD-1.5's scaled-linear betas. With "v_prediction" the betas are rescaled to zero
    terminal SNR (Lin et al. 2024, "Common diffusion noise schedules and sample steps are flawed"): the last
    training step is pure noise, as sampling's first is, so the model cannot learn to rely on a signal that is
    missing at sampling time (SD-1.5's schedule leaks ~7% of the image at t=999, which skews mean brightness)."""
    return DDPMScheduler(
        num_train_timesteps=num_train_timesteps,
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        prediction_type=prediction_type,
        rescale_betas_zero_snr=prediction_type == "v_prediction",
        clip_sample=False,
    )


def signal_level(scheduler: DDPMScheduler, timesteps: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """abar_t, the cumulative product of alphas, of each timestep (B,) as (B, 1, 1, 1) on `like`'s device and dtype:
    x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps."""
    return scheduler.alphas_cumprod.to(like.device)[timesteps].view(-1, 1, 1, 1).to(like.dtype)


def prediction_target(scheduler: DDPMScheduler, clean: torch.Tensor, noise: torch.Tensor,
                      timesteps: torch.Tensor) -> torch.Tensor:
    """What the UNet learns to predict under `scheduler`: the noise, or for "v_prediction" the velocity
    v = sqrt(abar_t) eps - sqrt(1 - abar_t) x0 (Salimans & Ho 2022)."""
    if scheduler.config.prediction_type == "v_prediction":  # by formula: not every sampler has get_velocity
        abar = signal_level(scheduler, timesteps, clean)
        return abar.sqrt() * noise - (1 - abar).sqrt() * clean
    return noise


def predicted_x0(noisy: torch.Tensor, prediction: torch.Tensor, timesteps: torch.Tensor,
                 scheduler: DDPMScheduler) -> torch.Tensor:
    """The clean image (or latent) the UNet's prediction implies: x0_hat = (x_t - sqrt(1 - abar_t) eps_hat) /
    sqrt(abar_t) for noise, x0_hat = sqrt(abar_t) x_t - sqrt(1 - abar_t) v_hat for velocity."""
    abar = signal_level(scheduler, timesteps, noisy)
    if scheduler.config.prediction_type == "v_prediction":
        return abar.sqrt() * noisy - (1 - abar).sqrt() * prediction
    return (noisy - (1 - abar).sqrt() * prediction) / abar.sqrt()


def pixel_noise_schedule(num_train_timesteps: int = 1000) -> DDPMScheduler:
    """The training schedule for faces in pixels: improved DDPM's cosine betas (Nichol & Dhariwal 2021), whose last
    step leaves no image behind, x0 clipped to the pixel range when sampling, and velocity prediction. SD-1.5's
    scaled-linear betas, made for latents, leave 7% of the image at t=999: sampling from pure noise then drifts into
    colour casts, which the first face models showed (green, magenta faces). Why velocity: the noise loss weighs an
    error in x0_hat by the signal-to-noise ratio, abar / (1 - abar), which vanishes at the noisy steps where a face's
    layout, and so who it is, gets decided; the velocity loss weighs it by SNR + 1 (Salimans & Ho 2022), so the
    identity pays there. With noise prediction an hour on CPU taught a face but no one in particular
    (benchmarks/faces/RESULTS.md)."""
    return DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_schedule="squaredcos_cap_v2",
                         prediction_type="v_prediction", clip_sample=True, clip_sample_range=1.0)
