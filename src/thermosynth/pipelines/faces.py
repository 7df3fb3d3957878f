"""LaPIG's face half as diffusers pipelines: an identity-conditioned visible face generator, and the paired
visible/thermal generation of LaPIG's Algorithm 1 on top of it and any visible-to-thermal pipeline."""

from __future__ import annotations

import numpy as np
import torch
from diffusers import DiffusionPipeline
from diffusers.image_processor import VaeImageProcessor
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput
from diffusers.utils.torch_utils import randn_tensor

from thermosynth.data.faces import VIEW_INDEX, VIEWS, check_views, face_caption
from thermosynth.models.identity import ID_PROMPT, IdentityInjection
from thermosynth.models.sface_network import alignment_theta
from thermosynth.models.text_encoders import encode_prompts
from thermosynth.pipelines.common import check_output_type, sampling_settings
from thermosynth.pipelines.identity_guidance import IdentityGuidance

FACE_PROCESSOR = VaeImageProcessor(do_resize=False)


def _as_list(value, count: int, what: str) -> list:
    values = [value] * count if value is None or isinstance(value, str) else list(value)
    if len(values) != count:
        raise ValueError(f"give one {what}, or one per identity vector ({count}), got {len(values)}")
    return values


def join_condition(identity_states: torch.Tensor, caption_states: torch.Tensor,
                   caption_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """What the face UNet cross-attends to: the identity prompt's states (all attended), then the caption's (its
    padding masked out). Returns states (B, L, D) and mask (B, L)."""
    states = torch.cat([identity_states, caption_states.to(identity_states.device, identity_states.dtype)], dim=1)
    mask = torch.cat([torch.ones(identity_states.shape[:2], dtype=caption_mask.dtype, device=identity_states.device),
                      caption_mask.to(identity_states.device)], dim=1)
    return states, mask


def face_class_labels(unet_config, identity: torch.Tensor, views: list[str]) -> torch.Tensor | None:
    """The face UNet's class labels for identity vectors (B, d) in `views`: thermosynth's UNets (class_embed_type
    "projection") take the vector and the view one-hot side by side, (B, d + 3); UNets with view classes (B,) class
    indices; UNets without either (Arc2Face's) None: the view reaches them by the caption."""
    check_views(views)
    index = torch.tensor([VIEW_INDEX[v] for v in views], device=identity.device)
    if unet_config.class_embed_type == "projection":
        return torch.cat([identity, torch.nn.functional.one_hot(index, len(VIEWS)).to(identity.dtype)], dim=1)
    if unet_config.num_class_embeds is not None:
        return index
    return None


class IdentityFacePipeline(DiffusionPipeline):
    """Visible face photos of a person from their identity vector (Arc2Face's injection, as LaPIG uses it), a view
    and a caption.

    The UNet cross-attends to two token sequences side by side: `photo of a id person` with the identity vector in
    place of the `id` token's embedding (models.identity.IdentityInjection), and the caption, read by
    `caption_encoder` (LaPIG: LongCLIP) or, without one, by the same text encoder (thermosynth's models: MiniLM). The
    identity vector and the view also reach the UNet as its class labels where it takes them (face_class_labels).
    Without a `vae` the UNet denoises pixels (thermosynth's own face models); with one, latents (Arc2Face / SD-1.5
    weights). Classifier-free guidance contrasts with the zero identity and the empty caption, as dropped in
    training. Identity guidance (pipelines/identity_guidance.py) steers the frontal faces towards the identity vector
    with SFace's gradient while sampling, where the model can: pixel space, SFace vectors, and the training photos'
    mean frontal landmarks in its config (`frontal_landmarks`, (5, 2) pixels of the generated face).
    """

    model_cpu_offload_seq = "text_encoder->caption_encoder->unet->vae"
    _optional_components = ["vae", "caption_encoder", "caption_tokenizer"]
    default_guidance_scale = 2.0
    default_identity_guidance = 0.1  # RMS step in [-1, 1] pixels; chosen on training identities (benchmarks/faces)

    def __init__(self, unet, scheduler, text_encoder, tokenizer, vae=None, caption_encoder=None,
                 caption_tokenizer=None, image_size: int = 64, identity_dim: int = 128,
                 identity_encoder: str = "sface", sampling: dict | None = None,
                 frontal_landmarks: list | None = None):
        super().__init__()
        if (caption_encoder is None) != (caption_tokenizer is None):
            raise ValueError("give the caption encoder with its tokenizer, or neither")
        self.register_modules(unet=unet, scheduler=scheduler, text_encoder=text_encoder, tokenizer=tokenizer, vae=vae,
                              caption_encoder=caption_encoder, caption_tokenizer=caption_tokenizer)
        self.register_to_config(image_size=image_size, identity_dim=identity_dim, identity_encoder=identity_encoder,
                                sampling=sampling, frontal_landmarks=frontal_landmarks)

    def encode_condition(self, identity: torch.Tensor, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token states (B, L, D) and attention mask (B, L): the identity prompt's, then the caption's."""
        identity_states = IdentityInjection(self.tokenizer, self.text_encoder)(identity, ID_PROMPT)
        if self.caption_encoder is not None:
            caption = encode_prompts(self.caption_tokenizer, self.caption_encoder, captions)
        else:
            caption = encode_prompts(self.tokenizer, self.text_encoder, captions)
        return join_condition(identity_states, *caption)

    def identity_guidance(self, scale: float | None):
        """The IdentityGuidance for a call's `scale` (None: the default where this model allows it, else off; 0:
        off), or None when off. A scale this model cannot use is refused, saying why."""
        missing = [why for why, lacking in (
            ("it denoises latents, and SFace reads pixels", self.vae is not None),
            (f"its identity vectors are {self.config.identity_encoder}'s, not SFace's",
             self.config.identity_encoder != "sface"),
            ("its config has no frontal_landmarks (models trained before identity guidance existed)",
             self.config.get("frontal_landmarks") is None)) if lacking]
        if scale is None:
            scale = 0.0 if missing else self.default_identity_guidance
        if scale < 0:
            raise ValueError(f"identity guidance must be >= 0 (0: off), got {scale}")
        if scale == 0:
            return None
        if missing:
            raise ValueError(f"identity guidance needs what this model lacks: {'; '.join(missing)}. Use 0 (off).")
        if getattr(self, "_sface", None) is None:
            from thermosynth.models.sface_network import SFaceNetwork

            self._sface = SFaceNetwork()
        theta = alignment_theta(np.asarray(self.config.frontal_landmarks, np.float32), self.config.image_size)
        return IdentityGuidance(self._sface.to(self._execution_device), theta.to(self._execution_device), scale)

    @torch.no_grad()
    def __call__(
        self,
        identity,
        view: str | list[str] = "frontal",
        caption: str | list[str] | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        identity_guidance: float | None = None,
    ):
        """One face per identity vector (B, d) (SFace's for thermosynth's models; a zero vector gives no one in
        particular), in `view`, described by `caption` (default: the view in words, as trained). Output types as
        the other pipelines ("pil", "np" (B, H, W, 3) in [0, 1], "pt" (B, 3, H, W) in [-1, 1]).
        `identity_guidance`: the step size of SFace identity guidance on the frontal faces (None: the model's
        default where it allows it; 0: off; see identity_guidance())."""
        # 1. Check inputs.
        check_output_type(output_type)
        if output_type == "pil16":
            raise ValueError("faces are 8-bit visible images: use output_type 'pil', 'np' or 'pt'")
        num_inference_steps, guidance_scale = sampling_settings(self, num_inference_steps, guidance_scale)
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
        identity = torch.as_tensor(np.asarray(identity, dtype=np.float32) if not torch.is_tensor(identity)
                                   else identity).float()
        identity = identity[None] if identity.ndim == 1 else identity
        if identity.ndim != 2 or identity.shape[1] != self.config.identity_dim or identity.shape[0] == 0:
            raise ValueError(f"identity vectors must be (B, {self.config.identity_dim}) "
                             f"({self.config.identity_encoder}'s), got {tuple(identity.shape)}")
        batch = identity.shape[0]
        views = _as_list(view, batch, "view")
        captions = [c if c is not None else face_caption(v)
                    for c, v in zip(_as_list(caption, batch, "caption"), views, strict=True)]
        guide = self.identity_guidance(identity_guidance)
        targets = identity.to(self._execution_device)
        steered = torch.tensor([v == "frontal" for v in views], device=self._execution_device)  # SFace reads these

        # 2. Encode the condition (and the unconditional one for guidance).
        do_guidance = guidance_scale > 1.0  # diffusers convention: <= 1 is the conditional prediction alone
        if do_guidance:
            identity = torch.cat([identity, torch.zeros_like(identity)])
            captions = captions + [""] * batch
        class_labels = face_class_labels(self.unet.config, identity.to(self._execution_device, self.unet.dtype),
                                         views * (2 if do_guidance else 1))
        states, mask = self.encode_condition(identity, captions)
        states = states.to(self._execution_device, self.unet.dtype)
        mask = mask.to(self._execution_device)

        # 3. Prepare the initial noise (pixels, or latents of the vae).
        size = self.config.image_size
        factor = 2 ** (len(self.vae.config.block_out_channels) - 1) if self.vae is not None else 1
        sample = randn_tensor((batch, self.unet.config.in_channels, size // factor, size // factor),
                              generator=generator, device=self._execution_device, dtype=self.unet.dtype)
        self.scheduler.set_timesteps(num_inference_steps, device=self._execution_device)
        sample = sample * self.scheduler.init_noise_sigma

        # 4. Denoise.
        for step, t in enumerate(self.progress_bar(self.scheduler.timesteps)):
            model_input = torch.cat([sample] * 2) if do_guidance else sample
            model_input = self.scheduler.scale_model_input(model_input, t)
            prediction = self.unet(model_input, t, encoder_hidden_states=states, encoder_attention_mask=mask,
                                   class_labels=class_labels).sample
            if do_guidance:
                cond, uncond = prediction.chunk(2)
                prediction = uncond + guidance_scale * (cond - uncond)
            if guide is not None:
                sample, prediction = guide.steer(self.scheduler, sample, prediction, t, targets, steered, step)
            sample = self.scheduler.step(prediction, t, sample, generator=generator).prev_sample

        # 5. Decode and convert.
        if self.vae is not None:
            sample = self.vae.decode(sample / self.vae.config.scaling_factor).sample
        faces = sample.float().clamp(-1, 1).cpu()
        self.maybe_free_model_hooks()
        images = faces if output_type == "pt" else FACE_PROCESSOR.postprocess(faces, output_type=output_type)
        return ImagePipelineOutput(images=images) if return_dict else (images,)


class PairedFacePipeline:
    """LaPIG's Algorithm 1: for each identity vector and view, a visible face from the identity-conditioned generator,
    then its thermal pair from a visible-to-thermal pipeline (thermosynth's V2T LDM, or pix2pix). The identity
    vectors come from the photos of each person (models.identity); captions default to the measured view.

    `thermal_size`: the side the visible face is resized to (bicubic) before translation, for V2T models trained
    on larger images than the face generator makes (None: as generated)."""

    def __init__(self, faces: IdentityFacePipeline, thermal, thermal_size: int | None = None):
        self.faces, self.thermal, self.thermal_size = faces, thermal, thermal_size

    def __call__(self, identity, view: str | list[str] = "frontal", caption: str | list[str] | None = None,
                 generator: torch.Generator | list[torch.Generator] | None = None,
                 num_inference_steps: int | None = None, guidance_scale: float | None = None,
                 thermal_inference_steps: int | None = None, thermal_guidance_scale: float | None = None,
                 identity_guidance: float | None = None):
        """(visible, thermal): two lists of PIL images, one pair per identity vector (B, d). A list of generators
        (one per row) makes each pair independent of the others in its batch, through both stages (up to rounding,
        which identity guidance amplifies). `identity_guidance` as IdentityFacePipeline takes it."""
        visible = self.faces(identity, view, caption, num_inference_steps=num_inference_steps,
                             guidance_scale=guidance_scale, generator=generator,
                             identity_guidance=identity_guidance).images
        if self.thermal_size is not None:
            visible = [v.resize((self.thermal_size, self.thermal_size), resample=3) for v in visible]  # 3: bicubic
        thermal = self.thermal(visible, num_inference_steps=thermal_inference_steps,
                               guidance_scale=thermal_guidance_scale, generator=generator).images
        return visible, thermal
