"""Starting from a pretrained Stable Diffusion (SD-1.5, SD-2.1 or any folder in diffusers' layout: unet/, vae/,
text_encoder/, tokenizer/, scheduler/): its parts, reshaped for thermosynth's tasks.

V2T follows InstructPix2Pix: the pretrained text-conditioned UNet gets 4 more input channels for the visible latent,
zero-initialised, so that before training it computes exactly what it computed pretrained; it stays conditioned on a
fixed prompt (the empty prompt's token states, stored with the pipeline as `PromptEmbedding`) so its cross-attention
layers keep working as they were trained.

T2IR reads the pretrained model's own text encoder, or another one (thermosynth's MiniLM, 384-d) through a learned
linear projection to the UNet's cross-attention width: diffusers' `encoder_hid_proj` ("text_proj"), which the UNet
applies to whatever states it is given, and which saves and loads with it.
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
def check_layout(model: str) -> None:
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

    check_layout(model)
    return DDPMScheduler.load_config(model, subfolder="scheduler")["prediction_type"]


def load_vae(model: str, fine_tuned: str | None = None) -> AutoencoderKL:
    """The pretrained VAE (`vae/`), frozen: used as it is, through the latent codec. With `fine_tuned`, the folder
    of that VAE with its decoder fine-tuned on thermal images (`train autoencoder --init-from`), checked to share
    the pretrained encoder, so that the latents the pretrained UNet learnt are unchanged."""
    check_layout(model)
    vae = AutoencoderKL.from_pretrained(model, subfolder="vae")
    if fine_tuned is not None:
        tuned = AutoencoderKL.from_pretrained(fine_tuned)
        encoder = {k: v for k, v in vae.state_dict().items() if k.startswith(ENCODER_PARTS)}
        tuned_state = tuned.state_dict()
        same = (tuned.config.scaling_factor == vae.config.scaling_factor and encoder.keys() <= tuned_state.keys()
                and all(torch.equal(v, tuned_state[k]) for k, v in encoder.items()))
        if not same:
            raise ValueError(f"{fine_tuned}: not {model}'s VAE with a fine-tuned decoder (its encoder or scaling "
                             "differ), so the pretrained UNet would not read its latents. Fine-tune one with "
                             f"`thermosynth train autoencoder --init-from {model}`, or leave out --autoencoder.")
        vae = tuned
    return vae.eval().requires_grad_(False)


ENCODER_PARTS = ("encoder.", "quant_conv.")  # what a decoder fine-tuning keeps frozen


def trainable_decoder(vae: AutoencoderKL) -> AutoencoderKL:
    """`vae` with its encoder (and quant_conv) frozen and its decoder (post_quant_conv, decoder) trainable."""
    vae.requires_grad_(False)
    vae.decoder.requires_grad_(True)
    if vae.post_quant_conv is not None:
        vae.post_quant_conv.requires_grad_(True)
    return vae


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


def load_unet(model: str, text_width: int | None = None) -> UNet2DConditionModel:
    """The pretrained text-conditioned UNet (`unet/`): as it is, for its own text encoder; with `text_width`, given a
    new projection from another encoder's `text_width`-d states to its cross-attention."""
    check_layout(model)
    unet = UNet2DConditionModel.from_pretrained(model, subfolder="unet")
    if text_width is not None:
        add_text_projection(unet, text_width)
    return unet


def add_text_projection(unet: UNet2DConditionModel, text_width: int) -> UNet2DConditionModel:
    """A trainable Linear(text_width -> cross_attention_dim) in front of the UNet's cross-attention, as diffusers'
    `encoder_hid_dim_type="text_proj"` (PyTorch's default initialisation; it trains with the UNet, LoRA or not)."""
    if unet.config.encoder_hid_dim_type is not None:
        raise ValueError(f"this UNet already projects its text states ({unet.config.encoder_hid_dim_type})")
    width = unet.config.cross_attention_dim
    unet.encoder_hid_proj = torch.nn.Linear(text_width, width, dtype=unet.dtype, device=unet.device)
    unet.register_to_config(encoder_hid_dim=text_width, encoder_hid_dim_type="text_proj")
    return unet


def reads_text_width(unet: UNet2DConditionModel) -> int:
    """The width of the token states the UNet takes: its projection's input, else its cross-attention's."""
    if unet.config.encoder_hid_dim_type == "text_proj":
        return int(unet.config.encoder_hid_dim)
    return int(unet.config.cross_attention_dim)


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
WHOLE_MODULES_FILE = "trained_modules.safetensors"  # modules a LoRA run trains whole (conv_in, encoder_hid_proj)


def add_lora(unet: UNet2DConditionModel, rank: int, train_conv_in: bool) -> None:
    """Freeze the UNet and give its attention projections LoRA adapters of `rank` (B starts at zero, so the output
    is unchanged until training moves them). Two small modules train whole beside them: V2T's conv_in, whose
    visible-latent channels start at zero and must learn (InstructPix2Pix trains it; SD-1.5: 23K weights), and a new
    text projection (MiniLM to SD-1.5: 295K weights), which starts random."""
    from peft import LoraConfig

    unet.requires_grad_(False)
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=LORA_TARGETS))
    unet.conv_in.requires_grad_(train_conv_in)
    if unet.encoder_hid_proj is not None:
        unet.encoder_hid_proj.requires_grad_(True)


def save_lora(unet: UNet2DConditionModel, folder: Path) -> None:
    """What a LoRA run trained, in `folder`: the adapters in diffusers' LoRA format, and the modules it trained
    whole (by their names in the UNet)."""
    from diffusers.utils import logging as diffusers_logging
    from safetensors.torch import save_file

    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()  # save_lora_adapter casts to dtype None, which warns about fp32 modules
    try:
        unet.save_lora_adapter(folder, weight_name=LORA_FILE)
    finally:
        diffusers_logging.set_verbosity(verbosity)
    whole = {name: p.detach().contiguous().cpu() for name, p in unet.named_parameters()
             if p.requires_grad and ".lora_" not in name}
    if whole:
        save_file(whole, Path(folder) / WHOLE_MODULES_FILE)


def load_lora(unet: UNet2DConditionModel, folder: Path) -> UNet2DConditionModel:
    """Apply a saved LoRA run to the pretrained UNet it was trained on (`load_v2t_unet(model)` or
    `load_unet(model)`; a text projection the run trained is added to the UNet when it has none)."""
    from safetensors.torch import load_file

    unet.load_lora_adapter(str(folder), prefix=None, weight_name=LORA_FILE)
    whole_file = Path(folder) / WHOLE_MODULES_FILE
    if whole_file.is_file():
        whole = load_file(whole_file)
        if "encoder_hid_proj.weight" in whole and unet.encoder_hid_proj is None:
            add_text_projection(unet, whole["encoder_hid_proj.weight"].shape[1])
        missing = set(whole) - set(dict(unet.named_parameters()))
        if missing:
            raise ValueError(f"{whole_file}: {sorted(missing)} are not in this UNet; load the LoRA into the UNet it "
                             "was trained on")
        unet.load_state_dict(whole, strict=False)
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

    check_layout(model)
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
