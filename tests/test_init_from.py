"""Starting from a pretrained Stable Diffusion (issue: SD-1.5-class fine-tuning), proved offline with a random model
in SD-1.5's layout and tensor names (conftest.write_sd_layout)."""

import json

import numpy as np
import pytest
import torch
from diffusers import UNet2DConditionModel
from PIL import Image

from thermosynth.cli import main
from thermosynth.models.stable_diffusion import empty_prompt_embedding, load_v2t_unet


def test_widened_conv_in_computes_exactly_what_the_pretrained_unet_computed(sd_layout_dir):
    pretrained = UNet2DConditionModel.from_pretrained(sd_layout_dir, subfolder="unet").eval()
    widened = load_v2t_unet(str(sd_layout_dir)).eval()
    assert widened.config.in_channels == 8 and widened.conv_in.weight[:, 4:].eq(0).all()
    generator = torch.Generator().manual_seed(0)
    noisy, visible = torch.randn(2, 4, 8, 8, generator=generator), torch.randn(2, 4, 8, 8, generator=generator)
    states = torch.randn(2, 77, 32, generator=generator)
    with torch.no_grad():
        expected = pretrained(noisy, 500, encoder_hidden_states=states).sample
        got = widened(torch.cat([noisy, visible], dim=1), 500, encoder_hidden_states=states).sample
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_the_fixed_prompt_is_the_empty_prompt_read_by_the_pretrained_text_encoder(sd_layout_dir):
    from transformers import AutoTokenizer, CLIPTextModel

    tokenizer = AutoTokenizer.from_pretrained(sd_layout_dir, subfolder="tokenizer")
    encoder = CLIPTextModel.from_pretrained(sd_layout_dir, subfolder="text_encoder").eval()
    ids = tokenizer([""], padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        expected = encoder(ids).last_hidden_state
    embedding = empty_prompt_embedding(str(sd_layout_dir))
    torch.testing.assert_close(embedding(3), expected.expand(3, -1, -1))


def test_train_v2t_from_a_pretrained_stable_diffusion_then_translate(sd_layout_dir, paired_folder, tmp_path):
    run = tmp_path / "run"
    main(["train", "v2t", "--data", str(paired_folder), "--out", str(run), "--init-from", str(sd_layout_dir),
          "--steps", "2", "--batch-size", "2"])
    index = json.loads((run / "pipeline" / "model_index.json").read_text())
    assert index["unet"] == ["diffusers", "UNet2DConditionModel"]
    assert index["prompt_embedding"] == ["thermosynth.models.stable_diffusion", "PromptEmbedding"]
    assert json.loads((run / "config.json").read_text())["prediction_type"] == "epsilon"  # SD-1.5's, not a preset's
    pretrained_vae = (sd_layout_dir / "vae" / "diffusion_pytorch_model.safetensors").read_bytes()
    assert (run / "pipeline" / "vae" / "diffusion_pytorch_model.safetensors").read_bytes() == pretrained_vae

    main(["translate", str(paired_folder / "visible" / "img0.png"), "--model", str(run / "pipeline"), "--out",
          str(tmp_path / "out"), "--steps", "2"])
    made = np.asarray(Image.open(tmp_path / "out" / "img0.png"))
    assert made.shape == (40, 48) and made.dtype == np.uint8


def test_init_from_refuses_what_it_cannot_use(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["train", "v2t", "--data", str(tmp_path), "--out", str(tmp_path / "run"), "--init-from",
              str(tmp_path / "missing")])
    assert "missing: no such folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "v2t", "--data", str(tmp_path), "--out", str(tmp_path / "run"), "--init-from", str(tmp_path)])
    assert "not a Stable Diffusion folder in diffusers' layout" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "v2t", "--data", str(tmp_path), "--out", str(tmp_path / "run"), "--autoencoder", "x",
              "--thermal-normalization", "dataset"])
    assert "go with --init-from" in capsys.readouterr().err
