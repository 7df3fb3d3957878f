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


def test_lora_trains_only_adapters_and_conv_in_and_round_trips(sd_layout_dir, paired_folder, tmp_path):
    from safetensors.torch import load_file

    from thermosynth.models.stable_diffusion import load_lora
    from thermosynth.pipelines import load_pipeline
    from thermosynth.training.checkpoint import checkpoint_dirs

    run = tmp_path / "run"
    main(["train", "v2t", "--data", str(paired_folder), "--out", str(run), "--init-from", str(sd_layout_dir),
          "--lora-rank", "4", "--steps", "3", "--batch-size", "2", "--lr", "1e-2"])
    checkpoint = checkpoint_dirs(run)[-1]
    trained = load_file(checkpoint / "ema.safetensors")
    assert trained and all(".lora_" in name or name.startswith("conv_in.") for name in trained)
    weights = load_file(checkpoint / "model.safetensors")
    pretrained = load_v2t_unet(str(sd_layout_dir)).state_dict()
    frozen = {name.replace(".base_layer", ""): value for name, value in weights.items()
              if ".lora_" not in name and not name.startswith("conv_in.")}
    assert frozen.keys() == {k for k in pretrained if not k.startswith("conv_in.")}
    assert all(torch.equal(value, pretrained[name]) for name, value in frozen.items())  # the base never moved
    assert any(v.abs().sum() > 0 for k, v in weights.items() if ".lora_B" in k)  # B starts at zero: it trained
    assert weights["conv_in.weight"][:, 4:].abs().sum() > 0  # the visible channels learnt

    exported = load_pipeline(str(run / "pipeline"))  # adapters folded in: no peft layers in the saved UNet
    applied = load_lora(load_v2t_unet(str(sd_layout_dir)), run / "pipeline" / "lora").eval()
    generator = torch.Generator().manual_seed(0)
    sample, states = torch.randn(1, 8, 8, 8, generator=generator), torch.randn(1, 77, 32, generator=generator)
    with torch.no_grad():
        torch.testing.assert_close(applied(sample, 10, encoder_hidden_states=states).sample,
                                   exported.unet(sample, 10, encoder_hidden_states=states).sample,
                                   rtol=1e-4, atol=1e-5)
    image = exported(np.zeros((40, 48, 3), np.uint8), num_inference_steps=2, output_type="np").images
    assert image.shape == (1, 40, 48, 1) and np.isfinite(image).all()


def test_gradient_checkpointing_recomputes_the_unet_blocks(sd_layout_dir, paired_folder, tmp_path):
    from thermosynth.training.config import DataConfig, make_config
    from thermosynth.training.v2t import build_task

    calls = {}
    for checkpointing in (False, True):
        config = make_config("v2t", "tiny", output_dir=str(tmp_path / str(checkpointing)),
                             init_from=str(sd_layout_dir), batch_size=2, gradient_checkpointing=checkpointing or None,
                             data=DataConfig(paths=[str(paired_folder)]))
        task = build_task(config)
        unet = task.model.train()
        resnet, count = unet.down_blocks[0].resnets[0], []
        forward = resnet.forward
        resnet.forward = lambda *a, **k: count.append(1) or forward(*a, **k)  # noqa: B023 (hooks miss recomputes)
        generator = torch.Generator().manual_seed(0)
        loss, _ = task.compute_loss(unet, task.draw_batch(generator), generator)
        loss.backward()
        calls[checkpointing] = len(count)
    assert calls == {False: 1, True: 2}  # forward, and once more in the backward pass


def test_train_t2ir_from_a_pretrained_stable_diffusion_then_generate(sd_layout_dir, tmp_path):
    from conftest import SAMPLES

    run = tmp_path / "t2ir"
    main(["train", "t2ir", "--data", str(SAMPLES / "hit-uav"), "--split", "train", "--out", str(run),
          "--init-from", str(sd_layout_dir), "--steps", "2", "--batch-size", "2", "--lora-rank", "4",
          "--gradient-checkpointing"])
    config = json.loads((run / "config.json").read_text())
    assert config["text_encoder"] == str(sd_layout_dir)  # its own CLIP, not the default MiniLM
    index = json.loads((run / "pipeline" / "model_index.json").read_text())
    assert index["text_encoder"] == ["transformers", "CLIPTextModel"]
    pretrained_vae = (sd_layout_dir / "vae" / "diffusion_pytorch_model.safetensors").read_bytes()
    assert (run / "pipeline" / "vae" / "diffusion_pytorch_model.safetensors").read_bytes() == pretrained_vae
    assert "mask_l1" in (run / "metrics.jsonl").read_text()  # the mask loss decodes through SD's VAE
    # LoRA: adapters only (conv_in stays pretrained), and they apply to the pretrained UNet as the export folded them
    from safetensors.torch import load_file

    from thermosynth.models.stable_diffusion import load_lora, load_unet
    from thermosynth.pipelines import load_text_pipeline
    from thermosynth.training.checkpoint import checkpoint_dirs

    trained = load_file(checkpoint_dirs(run)[-1] / "ema.safetensors")
    assert trained and all(".lora_" in name for name in trained)
    assert not (run / "pipeline" / "lora" / "trained_modules.safetensors").exists()  # conv_in stayed pretrained
    applied = load_lora(load_unet(str(sd_layout_dir)), run / "pipeline" / "lora").eval()
    exported = load_text_pipeline(str(run / "pipeline")).unet
    sample, states = torch.randn(1, 4, 8, 8), torch.randn(1, 77, 32)
    with torch.no_grad():
        torch.testing.assert_close(applied(sample, 10, encoder_hidden_states=states).sample,
                                   exported(sample, 10, encoder_hidden_states=states).sample, rtol=1e-4, atol=1e-5)

    main(["generate", "two cars on a road", "--model", str(run / "pipeline"), "-n", "1", "--steps", "2", "--out",
          str(tmp_path / "made")])
    assert Image.open(tmp_path / "made" / "0000.png").size == (160, 128)


def test_the_text_projection_sits_in_front_of_the_pretrained_cross_attention(sd_layout_dir):
    from thermosynth.models.stable_diffusion import load_unet, reads_text_width

    pretrained = load_unet(str(sd_layout_dir)).eval()
    projected = load_unet(str(sd_layout_dir), text_width=384).eval()
    assert reads_text_width(projected) == 384 and reads_text_width(pretrained) == 32
    states, sample = torch.randn(2, 9, 384), torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        expected = pretrained(sample, 100, encoder_hidden_states=projected.encoder_hid_proj(states)).sample
        torch.testing.assert_close(projected(sample, 100, encoder_hidden_states=states).sample, expected)


def test_train_t2ir_from_stable_diffusion_with_minilm_through_a_learned_projection(sd_layout_dir, tmp_path):
    """SD's UNet reading thermosynth's MiniLM (384-d) through a new projection to its cross-attention (32-d here):
    the projection trains beside the LoRA adapters, and exports with the UNet and with the adapters."""
    from safetensors.torch import load_file

    from thermosynth.models.stable_diffusion import load_lora, load_unet
    from thermosynth.models.text_encoders import DEFAULT_TEXT_ENCODER
    from thermosynth.pipelines import load_text_pipeline
    from thermosynth.training.checkpoint import checkpoint_dirs

    from conftest import SAMPLES

    run = tmp_path / "t2ir"
    main(["train", "t2ir", "--data", str(SAMPLES / "hit-uav"), "--split", "train", "--out", str(run),
          "--init-from", str(sd_layout_dir), "--text-encoder", DEFAULT_TEXT_ENCODER, "--steps", "2",
          "--batch-size", "2", "--lora-rank", "4", "--lr", "1e-2"])
    assert json.loads((run / "config.json").read_text())["text_encoder"] == DEFAULT_TEXT_ENCODER
    checkpoint = checkpoint_dirs(run)[-1]
    trained = load_file(checkpoint / "ema.safetensors")
    assert {"encoder_hid_proj.weight", "encoder_hid_proj.bias"} < set(trained)
    assert all(".lora_" in name or name.startswith("encoder_hid_proj.") for name in trained)
    torch.manual_seed(0)  # the projection's initial weights, as training drew them
    initial = load_unet(str(sd_layout_dir), text_width=384).encoder_hid_proj.weight
    assert not torch.equal(load_file(checkpoint / "model.safetensors")["encoder_hid_proj.weight"], initial)

    pipeline = load_text_pipeline(str(run / "pipeline"))
    assert pipeline.text_encoder.config.hidden_size == 384 and pipeline.unet.config.encoder_hid_dim == 384
    applied = load_lora(load_unet(str(sd_layout_dir)), run / "pipeline" / "lora").eval()  # adds the projection
    sample, states = torch.randn(1, 4, 8, 8), torch.randn(1, 6, 384)
    with torch.no_grad():
        torch.testing.assert_close(applied(sample, 10, encoder_hidden_states=states).sample,
                                   pipeline.unet(sample, 10, encoder_hidden_states=states).sample,
                                   rtol=1e-4, atol=1e-5)
    main(["generate", "two cars on a road", "--model", str(run / "pipeline"), "-n", "1", "--steps", "2", "--out",
          str(tmp_path / "made")])
    assert Image.open(tmp_path / "made" / "0000.png").size == (160, 128)


def test_fine_tune_the_pretrained_vae_decoder_on_thermal_then_train_v2t_on_it(sd_layout_dir, paired_folder,
                                                                               tmp_path, capsys):
    """`train autoencoder --init-from`: the decoder trains on thermal crops, the encoder and latent scaling stay the
    pretrained ones (the UNet's latents do not move); V2T then takes it with --init-from --autoencoder."""
    from safetensors.torch import load_file

    from thermosynth.training.checkpoint import checkpoint_dirs

    run = tmp_path / "ae"
    main(["train", "autoencoder", "--data", str(paired_folder), "--out", str(run), "--init-from", str(sd_layout_dir),
          "--steps", "3", "--batch-size", "2", "--lr", "1e-3"])
    trained = load_file(checkpoint_dirs(run)[-1] / "ema.safetensors")
    assert trained and all(name.startswith(("decoder.", "post_quant_conv.")) for name in trained)
    pretrained = load_file(sd_layout_dir / "vae" / "diffusion_pytorch_model.safetensors")
    tuned = load_file(run / "autoencoder" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(tuned[k], v) for k, v in pretrained.items() if k.startswith(("encoder.", "quant_conv.")))
    assert any(not torch.equal(tuned[k], v) for k, v in pretrained.items() if k.startswith("decoder."))
    assert json.loads((run / "autoencoder" / "config.json").read_text())["scaling_factor"] == 0.18215
    assert json.loads((run / "autoencoder" / "thermosynth.json").read_text())["decoder_fine_tuned_from"] == str(
        sd_layout_dir)

    main(["train", "v2t", "--data", str(paired_folder), "--out", str(tmp_path / "v2t"), "--init-from",
          str(sd_layout_dir), "--autoencoder", str(run / "autoencoder"), "--steps", "1", "--batch-size", "2"])
    exported = load_file(tmp_path / "v2t" / "pipeline" / "vae" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(exported[k], v) for k, v in tuned.items())  # the fine-tuned decoder decodes

    own = tmp_path / "own"  # thermosynth's own autoencoder has another latent space: refused, with the way out
    main(["train", "autoencoder", "--data", str(paired_folder), "--out", str(own), "--steps", "1", "--batch-size",
          "2"])
    with pytest.raises(SystemExit):
        main(["train", "v2t", "--data", str(paired_folder), "--out", str(tmp_path / "bad"), "--init-from",
              str(sd_layout_dir), "--autoencoder", str(own / "autoencoder"), "--steps", "1"])
    assert "train autoencoder --init-from" in capsys.readouterr().err


def test_train_autoencoder_init_from_thermosynths_own_takes_the_loss_weights(paired_folder, tmp_path):
    """The command line of the decoder fine-tuning that removed the shipped models' maze texture: its loss weights
    reach the run's config, and the fine-tuned autoencoder keeps the encoder it started from."""
    from safetensors.torch import load_file

    main(["train", "autoencoder", "--data", str(paired_folder), "--out", str(tmp_path / "own"), "--steps", "1",
          "--batch-size", "2"])
    source = tmp_path / "own" / "autoencoder"
    main(["train", "autoencoder", "--data", str(paired_folder), "--out", str(tmp_path / "tuned"), "--init-from",
          str(source), "--adversarial-weight", "0.05", "--ssim-weight", "0.2", "--steps", "1", "--batch-size", "2"])
    config = json.loads((tmp_path / "tuned" / "config.json").read_text())
    assert (config["adversarial_weight"], config["ssim_weight"], config["init_from"]) == (0.05, 0.2, str(source))
    before, after = (load_file(folder / "diffusion_pytorch_model.safetensors")
                     for folder in (source, tmp_path / "tuned" / "autoencoder"))
    assert all(torch.equal(after[k], v) for k, v in before.items() if k.startswith(("encoder.", "quant_conv.")))
