"""LaPIG's visible-to-thermal latent diffusion (Sec. 3.4) as a diffusers pipeline."""

from __future__ import annotations

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DiffusionPipeline,
    DPMSolverMultistepScheduler,
    UNet2DConditionModel,
    UNet2DModel,
)
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput
from diffusers.utils.torch_utils import randn_tensor

from thermosynth.data.normalization import ThermalNormalization
from thermosynth.models.latent_codec import v2t_unet_input
from thermosynth.models.stable_diffusion import PromptEmbedding, v2t_prediction
from thermosynth.pipelines.common import (
    LatentDiffusionMixin,
    ThermalOutputMixin,
    check_output_type,
    pad_to_multiple,
    postprocess,
    sampling_settings,
    visible_batch,
)

SCHEDULERS = {"ddim": DDIMScheduler, "dpm++": DPMSolverMultistepScheduler}


def set_scheduler(pipeline: DiffusionPipeline, name: str) -> None:
    """Swap the sampler, keeping the noise schedule the model was trained with."""
    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; choose one of {sorted(SCHEDULERS)}")
    extra = {"algorithm_type": "dpmsolver++"} if name == "dpm++" else {}
    pipeline.scheduler = SCHEDULERS[name].from_config(pipeline.scheduler.config, **extra)


class VisibleToThermalPipeline(ThermalOutputMixin, LatentDiffusionMixin, DiffusionPipeline):
    """Translate visible (RGB) images to thermal images.

    The UNet denoises a thermal latent given the visible image's latent, concatenated on channels; both come from
    one autoencoder, through the latent codec (models/latent_codec.py). Classifier-free
    guidance contrasts that with a zero (dropped) visible latent, as in training.

    The UNet is thermosynth's own (`UNet2DModel`) or a pretrained Stable Diffusion UNet widened for the visible
    latent (`UNet2DConditionModel`), which reads the fixed prompt stored as `prompt_embedding`.

    Any image size is accepted: the image is padded by reflection up to the multiple of pixels the autoencoder and
    UNet need (8 x 2^(UNet levels - 1)), and the result is cropped back to the input size.
    """

    model_cpu_offload_seq = "vae->unet->vae"
    _optional_components = ["prompt_embedding"]
    default_guidance_scale = 1.0  # without a recorded setting: the conditional model alone

    def __init__(
        self,
        vae: AutoencoderKL,
        unet: UNet2DModel | UNet2DConditionModel,
        scheduler: DDIMScheduler | DPMSolverMultistepScheduler,
        prompt_embedding: PromptEmbedding | None = None,  # with a UNet2DConditionModel only
        thermal_normalization: dict | None = None,
        sampling: dict | None = None,  # recommended num_inference_steps / guidance_scale (see sampling_settings)
    ):
        super().__init__()
        self.register_modules(vae=vae, unet=unet, scheduler=scheduler, prompt_embedding=prompt_embedding)
        normalization = ThermalNormalization.from_dict(thermal_normalization or ThermalNormalization().to_dict())
        self.register_to_config(thermal_normalization=normalization.to_dict(), sampling=sampling)

    def _check_models(self) -> None:
        latent_channels = self.vae.config.latent_channels
        if self.unet.config.in_channels != 2 * latent_channels:
            raise ValueError(
                f"unet.config.in_channels is {self.unet.config.in_channels} but thermal latent + visible latent "
                f"channels are {2 * latent_channels}: the UNet was not built for this autoencoder"
            )
        reads_text = isinstance(self.unet, UNet2DConditionModel)
        if reads_text != (self.prompt_embedding is not None):
            raise ValueError("a text-conditioned UNet needs a prompt_embedding, and only such a UNet takes one")
        if reads_text and self.unet.config.cross_attention_dim != self.prompt_embedding.config.width:
            raise ValueError(f"the prompt embedding is {self.prompt_embedding.config.width} wide but the UNet's "
                             f"cross-attention reads {self.unet.config.cross_attention_dim}")

    @torch.no_grad()
    def __call__(
        self,
        image,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ):
        """Translate `image` (one or a list of same-size visible images) to thermal. Steps and guidance default to
        those recorded with the model, else 25 steps without guidance (1.0).

        output_type: "pil" (8-bit grayscale), "pil16" (16-bit grayscale: raw units of a 16-bit model, else the
        8-bit range stretched to 0..65535), "np" (float (B, H, W, 1) in [0, 1]) or "pt" ((B, 1, H, W) in [-1, 1]).
        """
        # 1. Check inputs.
        check_output_type(output_type)
        num_inference_steps, guidance_scale = sampling_settings(self, num_inference_steps, guidance_scale)
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
        self._check_models()
        visible = visible_batch(image)
        batch, _, height, width = visible.shape

        # 2. Pad by reflection to a size the networks accept (reflection needs pad < size; replicate beyond that).
        visible = pad_to_multiple(visible, self.size_multiple)

        # 3. Encode the condition.
        condition = self.codec.encode(visible).to(self.unet.dtype)  # (B, 4, h, w)
        do_guidance = guidance_scale > 1.0  # diffusers convention: <= 1 is the conditional prediction alone
        if do_guidance:
            condition = torch.cat([condition, torch.zeros_like(condition)])

        # 4. Prepare the initial noise.
        latents = randn_tensor(
            (batch, self.vae.config.latent_channels, *condition.shape[2:]),
            generator=generator,
            device=self._execution_device,
            dtype=self.unet.dtype,
        )
        self.scheduler.set_timesteps(num_inference_steps, device=self._execution_device)
        latents = latents * self.scheduler.init_noise_sigma
        prompt_states = None if self.prompt_embedding is None else self.prompt_embedding(condition.shape[0])

        # 5. Denoise.
        for t in self.progress_bar(self.scheduler.timesteps):
            model_input = torch.cat([latents] * 2) if do_guidance else latents
            model_input = self.scheduler.scale_model_input(model_input, t)
            noise_pred = v2t_prediction(self.unet, v2t_unet_input(model_input, condition), t, prompt_states)
            if do_guidance:
                cond, uncond = noise_pred.chunk(2)
                noise_pred = uncond + guidance_scale * (cond - uncond)
            latents = self.scheduler.step(noise_pred, t, latents, generator=generator).prev_sample

        # 6. Decode and crop back to the input size.
        thermal = self.codec.decode_thermal(latents)[:, :, :height, :width].cpu()  # (B, 1, H, W)
        self.maybe_free_model_hooks()

        # 7. Convert.
        images = postprocess(thermal, output_type, self.normalization)
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)
