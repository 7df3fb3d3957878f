import json
import math
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from thermosynth.pipelines import VisibleToThermalPipeline
from thermosynth.training import DataConfig, make_config, train
from thermosynth.training.checkpoint import checkpoint_dirs, checkpoint_state
from thermosynth.training.diffusion import noise_schedule
from thermosynth.training.loop import TrainingProgress, learning_rate_schedule, run_training
from thermosynth.training.v2t import build_task, compute_loss

from conftest import scene, write_pairs

FAST = dict(steps=4, batch_size=2, crop_size=32, checkpoint_every=2, validate_every=4, log_every=1, warmup_steps=1)
V2T_FAST = dict(FAST, validation_inference_steps=2)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny autoencoder and V2T model trained for 4 steps each on synthetic pairs."""
    root = tmp_path_factory.mktemp("train")
    data = write_pairs(root / "pairs")
    paths = DataConfig(paths=[str(data)], split=None)
    autoencoder = train(make_config("autoencoder", "tiny", output_dir=str(root / "ae"), data=paths, **FAST))
    v2t_config = make_config("v2t", "tiny", output_dir=str(root / "v2t"), data=paths, autoencoder=str(autoencoder),
                             **V2T_FAST)
    pipeline = train(v2t_config)
    return {"root": root, "data": data, "autoencoder": autoencoder, "pipeline": pipeline, "v2t_config": v2t_config}


def test_run_folder_contents(trained):
    for run in ("ae", "v2t"):
        folder = trained["root"] / run
        assert json.loads((folder / "config.json").read_text())["steps"] == 4
        assert [p.name for p in checkpoint_dirs(folder)] == ["step-0000002", "step-0000004"]
        steps = [json.loads(line)["step"] for line in (folder / "metrics.jsonl").read_text().splitlines()]
        assert steps == [1, 2, 3, 4, 4]  # four losses, then the validation metrics
        assert (folder / "samples" / "step-0000004.png").is_file()
        assert not list(folder.rglob("*.bin")) and not list(folder.rglob("*.pt"))
        (start,) = [json.loads(line) for line in (folder / "environment.jsonl").read_text().splitlines()]
        assert (start["step"], start["device"], start["processes"], start["torch"]) == (0, "cpu", 1, torch.__version__)
    normalization = json.loads((trained["autoencoder"] / "thermosynth.json").read_text())["thermal_normalization"]
    assert normalization["bit_depth"] == 8


def test_trained_pipeline_translates(trained):
    pipeline = VisibleToThermalPipeline.from_pretrained(trained["pipeline"])
    pipeline.set_progress_bar_config(disable=True)
    (image,) = pipeline(scene(37, 51, 9)[0], num_inference_steps=2, generator=torch.Generator().manual_seed(0)).images
    assert image.size == (51, 37)
    assert pipeline.vae.config.scaling_factor != 0.18215  # set from this autoencoder's own latents


def test_resume_replays_exactly(trained, tmp_path):
    """Interrupt after step 2 (drop the later checkpoint and export), re-run the same config: same weights."""
    resumed_dir = tmp_path / "v2t"
    shutil.copytree(trained["root"] / "v2t", resumed_dir)
    shutil.rmtree(resumed_dir / "checkpoints" / "step-0000004")
    shutil.rmtree(resumed_dir / "pipeline")
    config = make_config("v2t", "tiny", output_dir=str(resumed_dir), data=trained["v2t_config"].data,
                         autoencoder=trained["v2t_config"].autoencoder, **V2T_FAST)
    train(config)
    original = load_file(trained["root"] / "v2t" / "checkpoints" / "step-0000004" / "model.safetensors")
    resumed = load_file(resumed_dir / "checkpoints" / "step-0000004" / "model.safetensors")
    assert original.keys() == resumed.keys()
    for key in original:
        torch.testing.assert_close(resumed[key], original[key], rtol=0, atol=0)
    for name in ("ema.safetensors", "optimizer.safetensors"):
        a = load_file(trained["root"] / "v2t" / "checkpoints" / "step-0000004" / name)
        b = load_file(resumed_dir / "checkpoints" / "step-0000004" / name)
        assert all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(line)["step"] for line in (resumed_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 4]  # resumed steps are logged once
    starts = [json.loads(line)["step"] for line in (resumed_dir / "environment.jsonl").read_text().splitlines()]
    assert starts == [0, 2]  # the resume is recorded beside the first start


def test_ema_state_round_trips_and_older_checkpoints_load(trained, tmp_path):
    """The EMA's settings and step count travel in ema.safetensors' metadata (EMAModel.state_dict); a checkpoint
    written before that, with the step count in state.json, still loads."""
    from diffusers.training_utils import EMAModel
    from safetensors.torch import save_file

    from thermosynth.training.checkpoint import load_checkpoint
    from thermosynth.training.v2t import build_task

    checkpoint = trained["root"] / "v2t" / "checkpoints" / "step-0000004"
    model = build_task(trained["v2t_config"]).model

    def restored(folder):
        ema = EMAModel(list(model.parameters()), decay=0.5)  # settings the checkpoint must override
        assert load_checkpoint(folder, model, ema, None) == 4
        return ema

    ema = restored(checkpoint)
    assert (ema.decay, ema.optimization_step) == (trained["v2t_config"].ema_decay, 4)
    shadow = load_file(checkpoint / "ema.safetensors")
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    assert all(torch.equal(a, shadow[name]) for a, name in zip(ema.shadow_params, names, strict=True))

    older = tmp_path / "step-0000004"
    shutil.copytree(checkpoint, older)
    save_file(shadow, older / "ema.safetensors")  # no metadata
    state = json.loads((older / "state.json").read_text())
    (older / "state.json").write_text(json.dumps({**state, "ema_optimization_step": 4}))
    assert restored(older).optimization_step == 4


def test_finished_run_is_not_retrained(trained):
    before = (trained["pipeline"] / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns
    assert train(trained["v2t_config"]) == trained["pipeline"]
    assert (trained["pipeline"] / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns == before


def test_changed_config_is_refused(trained):
    config = make_config("v2t", "tiny", output_dir=str(trained["root"] / "v2t"), data=trained["v2t_config"].data,
                         autoencoder=trained["v2t_config"].autoencoder, **{**V2T_FAST, "batch_size": 3})
    with pytest.raises(ValueError, match=r"\(batch_size differs\)"):
        train(config)


def test_v2t_loss_trains_on_the_condition(tiny_pipeline):
    """The loss backpropagates into the UNet, and dropout zeroes the visible latent the UNet sees."""
    unet = tiny_pipeline.unet
    batch = {"thermal_latent": torch.randn(4, 4, 8, 8), "visible_latent": torch.randn(4, 4, 8, 8)}
    seen = []
    hook = unet.conv_in.register_forward_hook(lambda module, args, out: seen.append(args[0][:, 4:].clone()))
    try:
        loss, _ = compute_loss(unet, batch, noise_schedule(), torch.Generator().manual_seed(0), 0.0)
        loss.backward()
        compute_loss(unet, batch, noise_schedule(), torch.Generator().manual_seed(0), 0.999999)
    finally:
        hook.remove()
        unet.zero_grad(set_to_none=True)
    assert torch.equal(seen[0], batch["visible_latent"])
    assert torch.count_nonzero(seen[1]) == 0
    assert np.isfinite(loss.item())


def test_presets_validate():
    with pytest.raises(ValueError, match="unknown preset"):
        make_config("v2t", "huge", output_dir="x", autoencoder="a")
    with pytest.raises(ValueError, match="multiple of 8"):
        make_config("autoencoder", "tiny", output_dir="x", crop_size=30)
    with pytest.raises(ValueError, match="autoencoder is required"):
        make_config("v2t", "tiny", output_dir="x")
    with pytest.raises(ValueError, match="time_budget"):
        make_config("autoencoder", "tiny", output_dir="x", time_budget=0)
    with pytest.raises(ValueError, match="hot_weight and cold_weight must be >= 0"):
        make_config("t2ir", "tiny", output_dir="x", autoencoder="a", cold_weight=-0.5)
    with pytest.raises(ValueError, match="adversarial_weight must be 0 or more"):
        make_config("autoencoder", "tiny", output_dir="x", adversarial_weight=-0.1)
    # --max-side below the crop would upscale every crop (it had trained on 8-pixel images); where whole images are
    # fitted to a size it did nothing at all
    with pytest.raises(ValueError, match="max_side 64 is below the crop size 128"):
        make_config("pix2pix", "tiny", output_dir="x", data=DataConfig(max_side=64))
    make_config("pix2pix", "tiny", output_dir="x", data=DataConfig(max_side=128))
    with pytest.raises(ValueError, match="max_side does not apply to t2ir"):
        make_config("t2ir", "tiny", output_dir="x", autoencoder="a", data=DataConfig(max_side=512))
    for task in ("autoencoder", "v2t", "t2ir"):
        for preset in ("tiny", "base", "small", "sd15"):
            make_config(task, preset, output_dir="x", autoencoder=None if task == "autoencoder" else "a")


def test_time_budget_stops_records_steps_and_resumes(tmp_path):
    """A budgeted run stops when its minutes are spent (steps only a cap), writes the steps it ran into config.json,
    keeps the trained seconds in its checkpoint, and is finished when the same command runs again."""
    data = DataConfig(paths=[str(write_pairs(tmp_path / "pairs"))], split=None)
    settings = dict(FAST, steps=100_000, checkpoint_every=100_000, validate_every=100_000, time_budget=0.03)
    config = make_config("autoencoder", "tiny", output_dir=str(tmp_path / "ae"), data=data, **settings)
    exported = train(config)
    steps = json.loads((tmp_path / "ae" / "config.json").read_text())["steps"]
    assert 1 <= steps < 100_000
    (checkpoint,) = checkpoint_dirs(tmp_path / "ae")
    assert checkpoint.name == f"step-{steps:07d}"
    assert checkpoint_state(checkpoint)["elapsed_s"] >= 0.03 * 60
    before = (exported / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns
    again = make_config("autoencoder", "tiny", output_dir=str(tmp_path / "ae"), data=data, **settings)
    assert train(again) == exported
    assert (exported / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns == before
    assert json.loads((tmp_path / "ae" / "config.json").read_text())["steps"] == steps


def test_learning_rate_follows_the_time_budget():
    config = make_config("v2t", "base", output_dir="x", autoencoder="a", time_budget=10)
    peak, warm = config.learning_rate, config.warmup_steps
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=peak)
    set_learning_rate = learning_rate_schedule(optimizer, config)

    def learning_rate_at(step, elapsed_s):
        set_learning_rate(step, elapsed_s)
        return optimizer.param_groups[0]["lr"]

    assert learning_rate_at(warm, elapsed_s=0) == pytest.approx(peak)
    assert learning_rate_at(warm, elapsed_s=300) == pytest.approx(peak * 0.55)  # half the budget
    assert learning_rate_at(warm, elapsed_s=600) == pytest.approx(peak * 0.1)
    assert learning_rate_at(warm, elapsed_s=6000) == pytest.approx(peak * 0.1)  # past the budget: stays at the floor
    assert learning_rate_at(0, elapsed_s=600) == pytest.approx(peak / warm)  # warm-up is counted in steps
    assert learning_rate_at(config.steps - 1, elapsed_s=0) > peak * 0.1  # the last step is one short of the end


def test_learning_rate_without_a_budget_matches_the_cosine():
    config = make_config("v2t", "base", output_dir="x", autoencoder="a")
    peak, warm, steps = config.learning_rate, config.warmup_steps, config.steps
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=peak)
    set_learning_rate = learning_rate_schedule(optimizer, config)
    for step in (0, warm // 2, warm, (warm + steps) // 2, steps - 1):
        set_learning_rate(step, 0.0)
        expected = peak * (step + 1) / warm if step < warm else peak * (
            0.1 + 0.45 * (1 + math.cos(math.pi * (step - warm) / (steps - warm))))
        assert optimizer.param_groups[0]["lr"] == pytest.approx(expected)


def test_budgeted_run_shows_the_budget_not_the_step_cap():
    budgeted = TrainingProgress(make_config("v2t", "tiny", output_dir="x", autoencoder="a", time_budget=2,
                                            steps=100_000), start=7, elapsed_s=30.4, disable=False)
    assert (budgeted.bar.total, budgeted.bar.n) == (120, 30)  # seconds of the budget, a resumed run's clock counted
    budgeted.advance(8, elapsed_s=45.6)
    budgeted.show(loss="0.5")
    assert budgeted.bar.n == 46 and budgeted.postfix == {"step": 8, "loss": "0.5"}
    budgeted.advance(9, elapsed_s=500.0)  # past the budget (the last step ends after it): the bar stops full
    assert budgeted.bar.n == 120 and budgeted.postfix["step"] == 9
    stepped = TrainingProgress(make_config("v2t", "tiny", output_dir="x", autoencoder="a", steps=50), start=7,
                               elapsed_s=30.4, disable=False)
    stepped.advance(8, elapsed_s=45.6)
    assert (stepped.bar.total, stepped.bar.n) == (50, 8)


def test_v_prediction_loss_targets_the_velocity(tiny_pipeline):
    """With a v-prediction schedule (zero terminal SNR), the loss is the MSE to v = sqrt(abar) eps - sqrt(1-abar) z0:
    a UNet that outputs exactly v (computed here from the same draws) has zero loss."""
    scheduler = noise_schedule(prediction_type="v_prediction")
    assert scheduler.alphas_cumprod[-1] == 0  # the last training step is pure noise
    batch = {"thermal_latent": torch.randn(3, 4, 8, 8), "visible_latent": torch.randn(3, 4, 8, 8)}
    generator = torch.Generator().manual_seed(5)
    noise = torch.randn(batch["thermal_latent"].shape, generator=generator)
    timesteps = torch.randint(0, 1000, (3,), generator=generator)
    velocity = scheduler.get_velocity(batch["thermal_latent"], noise, timesteps)

    class Oracle(torch.nn.Module):
        def forward(self, sample, t):
            assert torch.equal(t, timesteps)
            return type("Out", (), {"sample": velocity})()

    loss, _ = compute_loss(Oracle(), batch, scheduler, torch.Generator().manual_seed(5), 0.0)
    assert loss.item() == 0.0
    loss_eps, _ = compute_loss(Oracle(), batch, noise_schedule(), torch.Generator().manual_seed(5), 0.0)
    assert loss_eps.item() > 0.1


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_predicted_x0_inverts_the_noising_for_either_target(prediction_type):
    """A UNet that predicts its target exactly (noise, or velocity) implies the clean image it was noised from, at
    every step but the last (pure noise, where nothing of x0 is left to recover)."""
    from thermosynth.training.diffusion import pixel_noise_schedule, predicted_x0, prediction_target

    for scheduler in (noise_schedule(prediction_type=prediction_type), pixel_noise_schedule()):
        scheduler.register_to_config(prediction_type=prediction_type)
        clean, noise = torch.rand(4, 3, 8, 8) * 2 - 1, torch.randn(4, 3, 8, 8)
        timesteps = torch.tensor([0, 300, 700, 990])
        noisy = scheduler.add_noise(clean, noise, timesteps)
        target = prediction_target(scheduler, clean, noise, timesteps)
        assert torch.equal(target, noise) == (prediction_type == "epsilon")
        assert torch.allclose(predicted_x0(noisy, target, timesteps, scheduler), clean, atol=2e-3)



def test_non_finite_loss_stops_with_the_step_and_exports_nothing(trained, tmp_path):
    config = make_config("v2t", "tiny", output_dir=str(tmp_path / "nan"), data=trained["v2t_config"].data,
                         autoencoder=trained["v2t_config"].autoencoder, **V2T_FAST)
    task = build_task(config)
    calls = []
    compute = task.compute_loss

    def loss_that_breaks(model, batch, generator):
        calls.append(1)
        loss, extras = compute(model, batch, generator)
        return (loss * float("nan") if len(calls) >= 3 else loss), extras

    task.compute_loss = loss_that_breaks
    with pytest.raises(FloatingPointError, match=r"at step 3; .*resumes from step-0000002"):
        run_training(task)
    assert [p.name for p in checkpoint_dirs(tmp_path / "nan")] == ["step-0000002"]
    assert not (tmp_path / "nan" / "pipeline").exists()


def test_exported_weights_are_the_ema_weights(trained):
    """The exported UNet holds the EMA shadow of the last checkpoint, not the raw trained weights."""
    last = checkpoint_dirs(trained["root"] / "v2t")[-1]
    ema, raw = load_file(last / "ema.safetensors"), load_file(last / "model.safetensors")
    exported = VisibleToThermalPipeline.from_pretrained(trained["pipeline"]).unet.state_dict()
    assert ema.keys() <= exported.keys()
    assert all(torch.equal(exported[k], ema[k]) for k in ema)
    assert any(not torch.equal(ema[k], raw[k]) for k in ema)  # they differ, so the check above means something


def test_training_latents_equal_the_pipelines_encoding(trained):
    """The latents V2T trains on are what the pipeline computes at inference for the same image (same scaling, same
    posterior mode, same thermal-to-3-channel rule)."""
    from diffusers import AutoencoderKL

    from thermosynth.data.datasets import PairedImages
    from thermosynth.data.loading import load_paired_arrays
    from thermosynth.training.autoencoder import load_normalization
    from thermosynth.training.v2t import LatentPairs

    config = trained["v2t_config"]
    vae = AutoencoderKL.from_pretrained(config.autoencoder).eval()
    pairs = PairedImages(load_paired_arrays(config.data.paths, config.data.split, False, None),
                         load_normalization(config.autoencoder))
    cached = LatentPairs(pairs, vae, config.crop_size)
    pipeline = VisibleToThermalPipeline.from_pretrained(trained["pipeline"])
    visible, thermal = pairs.pair(0)
    height, width = cached.visible[0].shape[1:]
    image = torch.stack([visible, thermal.expand(3, -1, -1)])[:, :, : height * 8, : width * 8]
    with torch.no_grad():
        encoded = pipeline.codec.encode(image)
    torch.testing.assert_close(encoded[0], cached.visible[0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(encoded[1], cached.thermal[0], rtol=1e-4, atol=1e-4)


def _interrupted_then_resumed(root, make_config_for):
    """Train to 4 steps; copy the run, drop its step-4 checkpoint and export (a kill after step 2), re-run the same
    config in a process whose global RNG is elsewhere; return both step-4 checkpoints' tensors."""
    train(make_config_for(root / "full"))
    shutil.copytree(root / "full", root / "resumed")
    shutil.rmtree(checkpoint_dirs(root / "resumed")[-1])
    for export in ("autoencoder", "pipeline"):
        shutil.rmtree(root / "resumed" / export, ignore_errors=True)
    torch.manual_seed(4321)
    train(make_config_for(root / "resumed"))
    return [{name: load_file(checkpoint_dirs(root / run)[-1] / name) for name in ("model.safetensors",
                                                                                  "ema.safetensors")}
            for run in ("full", "resumed")]


def test_autoencoder_resume_replays_exactly_with_gradient_accumulation(trained, tmp_path):
    settings = dict(FAST, gradient_accumulation_steps=2)
    full, resumed = _interrupted_then_resumed(tmp_path, lambda out: make_config(
        "autoencoder", "tiny", output_dir=str(out), data=trained["v2t_config"].data, **settings))
    for name in full:
        assert all(torch.equal(full[name][k], resumed[name][k]) for k in full[name]), name


def test_t2ir_resume_replays_exactly(trained, tmp_path):
    from conftest import SAMPLES

    data = DataConfig(paths=[str(SAMPLES / "hit-uav")], split="train")
    full, resumed = _interrupted_then_resumed(tmp_path, lambda out: make_config(
        "t2ir", "tiny", output_dir=str(out), data=data, autoencoder=str(trained["autoencoder"]),
        **{**V2T_FAST, "crop_size": 32}))
    for name in full:
        assert all(torch.equal(full[name][k], resumed[name][k]) for k in full[name]), name


def test_adam_8bit_trains_checkpoints_and_resumes_exactly(trained, tmp_path):
    """bitsandbytes' AdamW8bit keeps its quantisation state in a nested dict: it must survive the safetensors
    checkpoint so that a resumed run replays the same steps."""
    pytest.importorskip("bitsandbytes", reason="the adam8bit extra is not installed")
    config = trained["v2t_config"]
    full, resumed = _interrupted_then_resumed(tmp_path, lambda out: make_config(
        "v2t", "tiny", output_dir=str(out), data=config.data, autoencoder=config.autoencoder, adam_8bit=True,
        **V2T_FAST))
    for name in full:
        assert all(torch.equal(full[name][k], resumed[name][k]) for k in full[name]), name
    saved = load_file(checkpoint_dirs(tmp_path / "full")[-1] / "optimizer.safetensors")
    quantised = [k for k, v in saved.items() if k.endswith("quant_state__.state1") and v.dtype == torch.uint8]
    assert quantised, "no 8-bit optimizer state was saved"
    plain = load_file(checkpoint_dirs(trained["root"] / "v2t")[-1] / "model.safetensors")
    assert any(not torch.equal(plain[k], full["model.safetensors"][k]) for k in plain)  # another optimizer


def test_adam_8bit_without_bitsandbytes_says_how_to_install(trained, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import fails as if not installed
    config = trained["v2t_config"]
    with pytest.raises(ImportError, match=r"pip install 'thermosynth\[adam8bit\]'"):
        train(make_config("v2t", "tiny", output_dir=str(tmp_path / "run"), data=config.data,
                          autoencoder=config.autoencoder, adam_8bit=True, **V2T_FAST))


def test_compile_switch_compiles_the_unet_and_trains_the_same_weights(trained, tmp_path, monkeypatch):
    """`compile_unet` compiles the UNet in place: it trains and exports what the eager run of the fixture does.
    torch.compile runs with the eager backend here (dynamo traces the UNet, no kernels are generated): the wiring is
    what is tested, the speed is benchmarks/perf's."""
    compiled = []
    original = torch.nn.Module.compile

    def compile_eagerly(module, *args, **kwargs):
        compiled.append(type(module).__name__)
        original(module, backend="eager")

    monkeypatch.setattr(torch.nn.Module, "compile", compile_eagerly)
    config = make_config("v2t", "tiny", output_dir=str(tmp_path / "v2t"), data=trained["v2t_config"].data,
                         autoencoder=trained["v2t_config"].autoencoder, compile_unet=True, **V2T_FAST)
    exported = train(config)
    assert compiled == ["UNet2DModel"]
    eager = load_file(trained["pipeline"] / "unet" / "diffusion_pytorch_model.safetensors")
    ours = load_file(exported / "unet" / "diffusion_pytorch_model.safetensors")
    assert ours.keys() == eager.keys()
    for key in eager:
        torch.testing.assert_close(ours[key], eager[key], rtol=0, atol=1e-6)
    assert (tmp_path / "v2t" / "samples" / "step-0000004.png").is_file()


def test_adversarial_term_trains_each_network_on_its_own_loss_only():
    """The autoencoder's PatchGAN term: the decoder's gradient is that of L1 + SSIM + KL + w * BCE(D(fake), 1), the
    discriminator's that of (BCE(D(real), 1) + BCE(D(fake), 0)) / 2, each differentiated on its own."""
    from thermosynth.models.configs import build_autoencoder
    from thermosynth.training.adversarial import gan_loss
    from thermosynth.training.autoencoder import AutoencoderWithDiscriminator, ssim
    from thermosynth.training.autoencoder import compute_loss as autoencoder_loss

    torch.manual_seed(0)
    model = AutoencoderWithDiscriminator.around(build_autoencoder("tiny"))
    images = torch.rand(2, 3, 32, 32) * 2 - 1

    def gradients(loss):
        model.zero_grad()
        loss.backward()
        return {n: torch.zeros_like(p) if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}

    combined = gradients(autoencoder_loss(model.vae, images, torch.Generator().manual_seed(1), 0.5, 1e-6,
                                          model.discriminator, 0.1)[0])
    posterior = model.vae.encode(images).latent_dist
    fake = model.vae.decode(posterior.sample(torch.Generator().manual_seed(1))).sample
    d = model.discriminator
    from_d = gradients(0.5 * (gan_loss(d(images), True) + gan_loss(d(fake.detach()), False)))
    posterior = model.vae.encode(images).latent_dist
    fake = model.vae.decode(posterior.sample(torch.Generator().manual_seed(1))).sample
    from_vae = gradients((fake - images).abs().mean() + 0.5 * (1 - ssim(fake, images))
                         + 1e-6 * posterior.kl().mean() + 0.1 * gan_loss(d(fake), True))
    for name, grad in combined.items():
        expected = from_d[name] if name.startswith("discriminator.") else from_vae[name]
        torch.testing.assert_close(grad, expected, atol=1e-6, rtol=1e-4, msg=name)
    assert all(from_d[n].abs().sum() > 0 for n in from_d if n.startswith("discriminator."))
    assert from_vae["vae.decoder.conv_out.weight"].abs().sum() > 0


def test_decoder_fine_tuning_keeps_the_latents_a_v2t_model_was_trained_on(trained, tmp_path):
    """`train autoencoder --init-from <thermosynth autoencoder> --adversarial-weight W`: the decoder and a PatchGAN
    train (and resume exactly), the encoder, quant_conv, latent scaling and thermal normalisation stay, so the V2T
    model trained on the first autoencoder reads the same latents and decodes them with the new decoder."""
    source = trained["autoencoder"]
    full, resumed = _interrupted_then_resumed(tmp_path, lambda out: make_config(
        "autoencoder", "tiny", output_dir=str(out), data=trained["v2t_config"].data, init_from=str(source),
        adversarial_weight=0.1, **FAST))
    for name in full:
        assert all(torch.equal(full[name][k], resumed[name][k]) for k in full[name]), name
    assert {k.split(".")[0] + "." + k.split(".")[1] for k in full["ema.safetensors"]} == {
        "vae.decoder", "vae.post_quant_conv", "discriminator.net"}

    tuned_dir = tmp_path / "full" / "autoencoder"
    original = load_file(source / "diffusion_pytorch_model.safetensors")
    tuned = load_file(tuned_dir / "diffusion_pytorch_model.safetensors")
    assert tuned.keys() == original.keys()  # the discriminator is not exported
    assert all(torch.equal(tuned[k], v) for k, v in original.items() if k.startswith(("encoder.", "quant_conv.")))
    assert any(not torch.equal(tuned[k], v) for k, v in original.items() if k.startswith("decoder."))
    for name in ("config.json", "thermosynth.json"):
        before, after = (json.loads((folder / name).read_text()) for folder in (source, tuned_dir))
        key = "scaling_factor" if name == "config.json" else "thermal_normalization"
        assert after[key] == before[key], name
    assert json.loads((tuned_dir / "thermosynth.json").read_text())["decoder_fine_tuned_from"] == str(source)

    from diffusers import AutoencoderKL

    pipeline = VisibleToThermalPipeline.from_pretrained(trained["pipeline"])
    swapped = VisibleToThermalPipeline.from_pretrained(trained["pipeline"],
                                                       vae=AutoencoderKL.from_pretrained(tuned_dir))
    image = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(swapped.codec.encode(image), pipeline.codec.encode(image), rtol=0, atol=0)
    made = [p(np.zeros((32, 32, 3), np.uint8), num_inference_steps=2, output_type="pt",
              generator=torch.Generator().manual_seed(0)).images for p in (pipeline, swapped)]
    assert made[0].shape == made[1].shape and not torch.equal(made[0], made[1])


def test_decoder_fine_tuning_refuses_a_folder_that_is_no_autoencoder(trained, tmp_path):
    (tmp_path / "nothing").mkdir()
    config = make_config("autoencoder", "tiny", output_dir=str(tmp_path / "run"), data=trained["v2t_config"].data,
                         init_from=str(tmp_path / "nothing"), **FAST)
    with pytest.raises(ValueError, match="neither an autoencoder exported by thermosynth"):
        train(config)
