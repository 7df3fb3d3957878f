"""Starting from a pretrained Stable Diffusion (SD-1.5, SD-2.1 or any folder in diffusers' layout: unet/, vae/,
text_encoder/, tokenizer/, scheduler/): its parts, reshaped for thermosynth's tasks.

V2T follows InstructPix2Pix: the pretrained text-conditioned UNet gets 4 more input channels for the visible latent,
zero-initialised, so that before training it computes exactly what it computed pretrained; it stays conditioned on a
fixed prompt (the empty prompt's token states, stored with the pipeline as `PromptEmbedding`) so its cross-attention
layers keep working as they were trained.
"""

from __future__ import annotations

import copy
import functools
import logging
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

logger = logging.getLogger(__name__)


@functools.cache  # every loader checks; a hub id is looked up once per process
def _check_layout(model: str) -> None:
    """A local folder in diffusers' layout, or a hub id (read from the cache offline): else one plain line."""
    from thermosynth.pipelines import HUB_ID

    folder = Path(model)
    if folder.exists():
        if not (folder / "unet" / "config.json").is_file():
            raise ValueError(f"{model}: not a Stable Diffusion folder in diffusers' layout (no unet/config.json). "
                             "Give the folder that holds unet/, vae/, text_encoder/, tokenizer/ and scheduler/.")
        return
    if not HUB_ID.fullmatch(model):
        raise ValueError(f"{model}: no such folder. Give a Stable Diffusion folder in diffusers' layout or a hub id "
                         "(owner/name).")
    from huggingface_hub import hf_hub_download

    try:
        hf_hub_download(model, "unet/config.json")
    except OSError as error:  # offline and not cached, unreachable, or no such repository
        raise ValueError(f"{model}: the hub id could not be read ({type(error).__name__}: not in the local Hugging "
                         "Face cache and the hub cannot be reached, or no such repository). Download it where there "
                         "is a network, or give a local folder.") from None


def pretrained_prediction_type(model: str) -> str:
    """What the pretrained UNet predicts ("epsilon" for SD-1.5, "v_prediction" for SD-2.1 768), from `scheduler/`."""
    from diffusers import DDPMScheduler

    _check_layout(model)
    return DDPMScheduler.load_config(model, subfolder="scheduler")["prediction_type"]


def load_vae(model: str) -> AutoencoderKL:
    """The pretrained VAE (`vae/`), frozen: used as it is, through the latent codec."""
    _check_layout(model)
    return AutoencoderKL.from_pretrained(model, subfolder="vae").eval().requires_grad_(False)


def widen_conv_in(unet: UNet2DConditionModel, extra_channels: int) -> UNet2DConditionModel:
    """Give `unet` `extra_channels` more input channels after its own, with zero weights (InstructPix2Pix): the
    widened UNet's output equals the pretrained one whatever the new channels hold, until training moves them."""
    old = unet.conv_in
    new = torch.nn.Conv2d(old.in_channels + extra_channels, old.out_channels, old.kernel_size, old.stride,
                          old.padding, dtype=old.weight.dtype, device=old.weight.device)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, : old.in_channels] = old.weight
        new.bias.copy_(old.bias)
    unet.conv_in = new
    unet.register_to_config(in_channels=new.in_channels)
    return unet


def load_unet(model: str) -> UNet2DConditionModel:
    """The pretrained text-conditioned UNet (`unet/`), as it is: T2IR's denoiser reads the same inputs."""
    _check_layout(model)
    return UNet2DConditionModel.from_pretrained(model, subfolder="unet")


def load_v2t_unet(model: str) -> UNet2DConditionModel:
    """The pretrained UNet, widened to read cat(noisy thermal latent, visible latent)."""
    unet = load_unet(model)
    return widen_conv_in(unet, unet.config.in_channels)


def v2t_prediction(unet, sample: torch.Tensor, timesteps, prompt_states: torch.Tensor | None) -> torch.Tensor:
    """The V2T UNet's output for either kind: thermosynth's own UNet2DModel reads no text; a pretrained
    UNet2DConditionModel reads the fixed prompt's states."""
    if prompt_states is None:
        return unet(sample, timesteps).sample
    return unet(sample, timesteps, encoder_hidden_states=prompt_states.to(sample.dtype)).sample


# LoRA on the attention projections, as diffusers' LoRA training scripts do; saved in diffusers' LoRA format
LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
LORA_FILE = "pytorch_lora_weights.safetensors"
CONV_IN_FILE = "conv_in.safetensors"


def add_lora(unet: UNet2DConditionModel, rank: int, train_conv_in: bool) -> None:
    """Freeze the UNet and give its attention projections LoRA adapters of `rank` (B starts at zero, so the output
    is unchanged until training moves them). V2T also trains conv_in whole: its visible-latent channels start at zero
    and must learn (InstructPix2Pix trains it), and it is small (SD-1.5: 23K weights)."""
    from peft import LoraConfig

    unet.requires_grad_(False)
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=LORA_TARGETS))
    unet.conv_in.requires_grad_(train_conv_in)


def save_lora(unet: UNet2DConditionModel, folder: Path) -> None:
    """What a LoRA run trained, in `folder`: the adapters in diffusers' LoRA format, and conv_in when it trained."""
    from diffusers.utils import logging as diffusers_logging
    from safetensors.torch import save_file

    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()  # save_lora_adapter casts to dtype None, which warns about fp32 modules
    try:
        unet.save_lora_adapter(folder, weight_name=LORA_FILE)
    finally:
        diffusers_logging.set_verbosity(verbosity)
    if unet.conv_in.weight.requires_grad:
        save_file({k: v.detach().contiguous().cpu() for k, v in unet.conv_in.state_dict().items()},
                  Path(folder) / CONV_IN_FILE)


def load_lora(unet: UNet2DConditionModel, folder: Path) -> UNet2DConditionModel:
    """Apply a saved LoRA run to the pretrained UNet it was trained on (`load_v2t_unet(model)` or
    `load_unet(model)`)."""
    from safetensors.torch import load_file

    unet.load_lora_adapter(str(folder), prefix=None, weight_name=LORA_FILE)
    if (Path(folder) / CONV_IN_FILE).is_file():
        unet.conv_in.load_state_dict(load_file(Path(folder) / CONV_IN_FILE))
    return unet


def _merged(unet: UNet2DConditionModel) -> UNet2DConditionModel:
    """A copy with the adapters folded into the weights: a plain UNet that loads without peft."""
    plain = copy.deepcopy(unet)
    plain.fuse_lora()
    plain.unload_lora()
    return plain


def save_trained_pipeline(pipeline_for, unet, folder: Path) -> None:
    """`pipeline_for(unet)` saved into `folder`; a UNet with LoRA adapters is saved with them folded in, and the
    adapters alone go to `folder/lora/`, to share or apply with `load_lora`."""
    has_lora = bool(getattr(unet, "peft_config", None))
    pipeline_for(_merged(unet) if has_lora else unet).save_pretrained(folder)
    if has_lora:
        save_lora(unet, Path(folder) / "lora")


class PromptEmbedding(ModelMixin, ConfigMixin):
    """The token states of one fixed prompt, saved with a pipeline whose UNet expects text but gets none."""

    @register_to_config
    def __init__(self, length: int = 77, width: int = 768):
        super().__init__()
        self.register_buffer("states", torch.zeros(1, length, width))

    def forward(self, batch_size: int) -> torch.Tensor:
        return self.states.expand(batch_size, -1, -1)


def load_text_encoder(model: str):
    """(tokenizer, text encoder) of the pretrained model (`tokenizer/`, `text_encoder/`), frozen."""
    from transformers import AutoTokenizer, CLIPTextModel

    _check_layout(model)
    tokenizer = AutoTokenizer.from_pretrained(model, subfolder="tokenizer")
    return tokenizer, CLIPTextModel.from_pretrained(model, subfolder="text_encoder").eval().requires_grad_(False)


@torch.no_grad()
def empty_prompt_embedding(model: str) -> PromptEmbedding:
    """The empty prompt read by the pretrained text encoder (`text_encoder/`, `tokenizer/`): what SD's UNet saw for
    a dropped caption in training, so the UNet runs as pretrained for an unconditional image."""
    tokenizer, text_encoder = load_text_encoder(model)
    tokens = tokenizer("", padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                       return_tensors="pt")
    states = text_encoder(tokens.input_ids).last_hidden_state
    embedding = PromptEmbedding(length=states.shape[1], width=states.shape[2])
    embedding.states.copy_(states)
    return embedding
