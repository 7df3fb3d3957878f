"""Tiny random components and synthetic data: every test runs on the CPU in seconds, offline."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # tests never touch the network

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SAMPLES = Path(__file__).resolve().parents[1] / "src" / "thermosynth" / "samples"


def scene(height: int, width: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic aligned pair: a textured visible image and a thermal image with a hot square."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    visible = np.stack([(xx * 255 // width), (yy * 255 // height), rng.integers(0, 256, (height, width))], axis=2)
    thermal = (60 + yy * 40 // height).astype(np.uint8)
    top, left = rng.integers(0, height // 2), rng.integers(0, width // 2)
    thermal[top : top + height // 3, left : left + width // 3] = 220
    visible[top : top + height // 3, left : left + width // 3] = (200, 40, 40)
    return visible.astype(np.uint8), thermal


def write_pairs(root: Path, count: int = 6) -> Path:
    """visible/ and thermal/ with `count` synthetic pairs of 40x48, as PNG so that pixels are exact."""
    (root / "visible").mkdir(parents=True)
    (root / "thermal").mkdir()
    for i in range(count):
        visible, thermal = scene(40, 48, i)
        Image.fromarray(visible).save(root / "visible" / f"img{i}.png")
        Image.fromarray(thermal).save(root / "thermal" / f"img{i}.png")
    return root


@pytest.fixture
def paired_folder(tmp_path) -> Path:
    return write_pairs(tmp_path / "pairs")


@pytest.fixture(scope="session")
def tiny_pipeline():
    """A VisibleToThermalPipeline with random weights: AE downsampling 2x, UNet with 2 levels."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DModel

    from thermosynth.pipelines import VisibleToThermalPipeline

    torch.manual_seed(0)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16), layers_per_block=1,
        norm_num_groups=8, down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
    )
    unet = UNet2DModel(
        in_channels=8, out_channels=4, block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8,
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"), sample_size=16,
    )
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False)
    pipeline = VisibleToThermalPipeline(vae.eval(), unet.eval(), scheduler)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def tiny_face_pipeline(identity_dim: int, frontal_landmarks: list | None = None):
    """An IdentityFacePipeline with a random tiny UNet reading the packaged MiniLM, at 32 px."""
    from diffusers import DDIMScheduler

    from thermosynth.data.faces import VIEWS
    from thermosynth.models.configs import build_face_unet
    from thermosynth.models.text_encoders import load_text_encoder
    from thermosynth.pipelines import IdentityFacePipeline
    from thermosynth.training.diffusion import pixel_noise_schedule

    tokenizer, text_encoder = load_text_encoder()
    torch.manual_seed(0)
    unet = build_face_unet("tiny", text_encoder.config.hidden_size, len(VIEWS), identity_dim).eval()
    scheduler = DDIMScheduler.from_config(pixel_noise_schedule().config, timestep_spacing="trailing")
    pipeline = IdentityFacePipeline(unet, scheduler, text_encoder, tokenizer, image_size=32,
                                    identity_dim=identity_dim, frontal_landmarks=frontal_landmarks)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


@pytest.fixture(scope="session")
def tiny_pipeline_dir(tiny_pipeline, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("pipeline")
    tiny_pipeline.save_pretrained(folder)
    return folder


def requires_shared_data(*parts: str):
    path = SHARED_DATA.joinpath(*parts)
    return pytest.mark.skipif(not path.is_dir(), reason=f"{path} not present (only on machines with ../shared)")


def sd_layout_vae(shift_factor: float | None = None):
    """SD-1.5's VAE layout (4 levels: 8x downsampling, 4 latent channels, scaling 0.18215) at small widths."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8, 16, 16), layers_per_block=1,
        norm_num_groups=4, down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        scaling_factor=0.18215, shift_factor=shift_factor,
    ).eval()


def byte_level_clip_vocab() -> dict[str, int]:
    """CLIP's byte-level alphabet (each byte's printable stand-in, alone and word-final) and its two special tokens,
    without merges: 514 tokens, enough for a CLIP tokenizer to read any text."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = iter(range(256, 512))  # the other bytes map above 255, in order
    chars = [chr(b) if b in printable else chr(next(extra)) for b in range(256)]
    tokens = [*chars, *(c + "</w>" for c in chars), "<|startoftext|>", "<|endoftext|>"]
    return {token: index for index, token in enumerate(tokens)}


def _byte_level_clip_tokenizer():
    from transformers import CLIPTokenizer

    return CLIPTokenizer(vocab=byte_level_clip_vocab(), merges=[], model_max_length=77)


def write_sd_layout(folder: Path) -> Path:
    """A random Stable Diffusion in SD-1.5's diffusers layout, config keys and tensor names, at small widths:
    unet/, vae/, text_encoder/, tokenizer/, scheduler/ and model_index.json, saved by StableDiffusionPipeline."""
    from diffusers import PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = _byte_level_clip_tokenizer()
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=77, projection_dim=32, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    ))
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8,
    )
    scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
                              skip_prk_steps=True, set_alpha_to_one=False)  # SD-1.5's scheduler config
    pipeline = StableDiffusionPipeline(vae=sd_layout_vae(), text_encoder=text_encoder, tokenizer=tokenizer,
                                       unet=unet, scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
    pipeline.save_pretrained(folder)
    return folder


def clip_tokenizer_with_id(max_length: int = 77):
    """The byte-level CLIP tokenizer with `id` as one token, as CLIP's real vocabulary holds it (Arc2Face's prompt)."""
    from transformers import CLIPTokenizer

    vocab = byte_level_clip_vocab()
    vocab["id</w>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[("i", "d</w>")], model_max_length=max_length)


def small_clip_text_model(tokenizer, positions: int = 77):
    """A random CLIP text model at small widths reading `tokenizer`'s vocabulary, with `positions` positions."""
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=positions, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id))


def write_arc2face_layout(folder: Path) -> tuple[Path, Path]:
    """Random Arc2Face weights in its published layout, at small widths: folder/weights/encoder (its CLIP text
    model) and folder/weights/arc2face (its UNet, SD-1.5's tensor names), beside an SD-1.5 layout in folder/sd15
    whose tokenizer holds `id` as one token. Returns (weights, sd15)."""
    from diffusers import UNet2DConditionModel

    base = write_sd_layout(folder / "sd15")
    tokenizer = clip_tokenizer_with_id()
    tokenizer.save_pretrained(base / "tokenizer")
    weights = folder / "weights"
    torch.manual_seed(1)
    small_clip_text_model(tokenizer).save_pretrained(weights / "encoder")
    UNet2DConditionModel.from_pretrained(base, subfolder="unet").save_pretrained(weights / "arc2face")
    return weights, base


@pytest.fixture(scope="session")
def sd_layout_dir(tmp_path_factory) -> Path:
    return write_sd_layout(tmp_path_factory.mktemp("sd-layout"))


@pytest.fixture(scope="session")
def tiny_captioner_dir(tmp_path_factory):
    """A randomly initialised ViT + BERT-decoder captioner, saved with its image processor and tokenizer."""
    from transformers import (
        BertConfig,
        BertTokenizerFast,
        VisionEncoderDecoderConfig,
        VisionEncoderDecoderModel,
        ViTConfig,
        ViTImageProcessor,
    )

    from thermosynth.models.text_encoders import load_text_encoder

    folder = tmp_path_factory.mktemp("captioner")
    tokenizer = BertTokenizerFast.from_pretrained(load_text_encoder()[0].name_or_path)
    torch.manual_seed(0)
    encoder = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64)
    decoder = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, is_decoder=True, add_cross_attention=True)
    model = VisionEncoderDecoderModel(VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder))
    model.config.decoder_start_token_id = tokenizer.cls_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.decoder_start_token_id = tokenizer.cls_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
