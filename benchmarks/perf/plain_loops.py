"""The plain diffusers loops thermosynth is compared with: the training step and the V2T sampling loop a diffusers
user would write for the same networks. `train_throughput.py`, `sampling.py` and `optimisations.py` all measure
against these, so that "the plain loop" means one thing."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

TEXT_WIDTH, TEXT_TOKENS = 384, 16  # the packaged MiniLM's states; the plain loop's random captions' length


def training_step(unet: torch.nn.Module, task: str, batch_size: int, side: int, device: str, *,
                  bf16: bool = False, fused_adamw: bool = False, channels_last: bool = False,
                  autoencoder: torch.nn.Module | None = None) -> Callable[[], None]:
    """One step of the plain loop on `unet` (already on `device`): random latents of side x side (and a visible
    condition for "v2t", or text states of MiniLM's width for "t2ir"), DDPMScheduler noise, MSE, torch AdamW (its
    default foreach kernel, or fused), autocast to bf16 if asked. With `autoencoder`, the latents are not random but
    encoded from random images every step, as a loop without cached latents does."""
    from diffusers import DDPMScheduler

    if channels_last:
        unet.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-4, fused=fused_adamw or None)
    scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    channels = unet.config.in_channels // 2 if task == "v2t" else unet.config.in_channels
    autocast = torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=bf16)
    layout = torch.channels_last if channels_last else torch.contiguous_format

    def latents() -> torch.Tensor:
        if autoencoder is None:
            return torch.randn(batch_size, channels, side, side, device=device)
        images = torch.rand(batch_size, 3, side * 8, side * 8, device=device) * 2 - 1  # the autoencoder's factor
        with torch.no_grad(), autocast:
            return autoencoder.encode(images).latent_dist.sample().float()

    def step() -> None:
        target = latents()
        noise = torch.randn_like(target)
        timesteps = torch.randint(0, 1000, (batch_size,), device=device)
        noisy = scheduler.add_noise(target, noise, timesteps)
        with autocast:
            if task == "v2t":
                sample = torch.cat([noisy, latents()], 1).contiguous(memory_format=layout)
                prediction = unet(sample, timesteps).sample
            else:
                states = torch.randn(batch_size, TEXT_TOKENS, TEXT_WIDTH, device=device)
                prediction = unet(noisy.contiguous(memory_format=layout), timesteps,
                                  encoder_hidden_states=states).sample
        loss = F.mse_loss(prediction.float(), noise)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


@torch.no_grad()
def translate(pipeline, visible: torch.Tensor, steps: int, guidance: float,
              generator: torch.Generator) -> torch.Tensor:
    """The plain V2T sampling loop: encode, DDIM with CFG (conditional and zeroed condition in one batch), decode.
    It shares only thermosynth's codec conventions with the pipeline, which would not match otherwise."""
    from thermosynth.models.latent_codec import LatentCodec, v2t_unet_input
    from thermosynth.models.stable_diffusion import v2t_prediction

    codec, unet, scheduler = LatentCodec(pipeline.vae), pipeline.unet, pipeline.scheduler
    condition = codec.encode(visible).to(unet.dtype)
    condition = torch.cat([condition, torch.zeros_like(condition)])
    latents = torch.randn((visible.shape[0], pipeline.vae.config.latent_channels, *condition.shape[2:]),
                          generator=generator, device=visible.device, dtype=unet.dtype)
    scheduler.set_timesteps(steps, device=visible.device)
    prompt_states = None if pipeline.prompt_embedding is None else pipeline.prompt_embedding(condition.shape[0])
    for t in scheduler.timesteps:
        prediction = v2t_prediction(unet, v2t_unet_input(torch.cat([latents] * 2), condition), t, prompt_states)
        cond, uncond = prediction.chunk(2)
        latents = scheduler.step(uncond + guidance * (cond - uncond), t, latents).prev_sample
    return codec.decode_thermal(latents).cpu()  # as the pipeline hands its images back
