import numpy as np
import pytest
import torch

from thermosynth.cli import main
from thermosynth.models.pix2pix import Pix2PixGenerator, Pix2PixPair
from thermosynth.pipelines import Pix2PixPipeline, VisibleToThermalPipeline, load_pipeline, load_text_pipeline
from thermosynth.training.adversarial import gan_loss
from thermosynth.training.config import make_config
from thermosynth.training.pix2pix import compute_loss

from conftest import SAMPLES, write_pairs

SMALL = dict(generator_config=dict(num_downs=5, base_channels=8), discriminator_config=dict(base_channels=8))


def _gradients(model, loss):
    model.zero_grad()
    loss.backward()
    return {n: torch.zeros_like(p) if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}


def test_each_network_gets_gradient_from_its_own_loss_only():
    torch.manual_seed(0)
    model = Pix2PixPair(**SMALL).eval()  # eval: no dropout, so three forward passes see the same generator
    batch = {"visible": torch.rand(2, 3, 64, 64) * 2 - 1, "thermal": torch.rand(2, 1, 64, 64) * 2 - 1}
    combined = _gradients(model, compute_loss(model, batch, l1_weight=100.0)[0])

    # The textbook losses, each differentiated on its own.
    visible, thermal = batch["visible"], batch["thermal"]
    fake = model.generator(visible)
    d = model.discriminator
    loss_d = 0.5 * (gan_loss(d(torch.cat([visible, thermal], 1)), True)
                    + gan_loss(d(torch.cat([visible, fake.detach()], 1)), False))
    from_d = _gradients(model, loss_d)
    fake = model.generator(visible)
    loss_g = gan_loss(d(torch.cat([visible, fake], 1)), True) + 100.0 * (fake - thermal).abs().mean()
    from_g = _gradients(model, loss_g)

    for name, grad in combined.items():
        expected = from_d[name] if name.startswith("discriminator.") else from_g[name]
        assert torch.allclose(grad, expected, atol=1e-6, rtol=1e-4), name
        assert expected.abs().sum() > 0, name


def test_generator_needs_its_multiple_and_pipeline_pads_any_size(tmp_path):
    torch.manual_seed(0)
    generator = Pix2PixGenerator(num_downs=5, base_channels=8)
    assert generator.size_multiple == 32
    assert generator(torch.zeros(1, 3, 64, 96)).shape == (1, 1, 64, 96)
    pipeline = Pix2PixPipeline(generator)
    image = np.random.default_rng(0).integers(0, 256, (45, 70, 3), dtype=np.uint8)
    made = pipeline(image, output_type="pt").images
    assert made.shape == (1, 1, 45, 70) and made.abs().max() <= 1

    pipeline.save_pretrained(tmp_path / "p2p")
    assert not list((tmp_path / "p2p").rglob("*.bin"))  # safetensors only
    loaded = load_pipeline(str(tmp_path / "p2p"))
    assert isinstance(loaded, Pix2PixPipeline)
    assert torch.equal(loaded(image, output_type="pt").images, made)


def test_load_pipeline_dispatches_to_v2t(tiny_pipeline_dir):
    assert isinstance(load_pipeline(str(tiny_pipeline_dir)), VisibleToThermalPipeline)


def test_load_pipeline_refuses_a_foreign_pipeline(tmp_path):
    (tmp_path / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    with pytest.raises(ValueError, match="not a thermosynth translation pipeline"):
        load_pipeline(str(tmp_path))


def test_each_loader_takes_only_its_own_pipelines(tiny_pipeline_dir, tmp_path):
    with pytest.raises(ValueError, match="not a text-to-thermal pipeline"):
        load_text_pipeline(str(tiny_pipeline_dir))
    with pytest.raises(ValueError, match="no model_index.json"):  # a local folder is never taken for a hub id
        load_text_pipeline(str(tmp_path))


def test_config_checks_crop_against_the_unet_depth(tmp_path):
    with pytest.raises(ValueError, match="multiple of 128"):
        make_config("pix2pix", "tiny", output_dir=str(tmp_path), crop_size=96)
    config = make_config("pix2pix", "tiny", output_dir=str(tmp_path))
    assert config.adam_beta1 == 0.5 and config.max_grad_norm is None


def test_train_pix2pix_then_translate_from_the_cli(tmp_path, capsys):
    run = tmp_path / "run"
    main(["train", "pix2pix", "--data", str(SAMPLES / "roadscene"), "--out", str(run), "--steps", "3",
          "--batch-size", "2"])
    assert (run / "pipeline" / "model_index.json").is_file()
    assert (run / "samples" / "step-0000003.png").is_file()
    main(["translate", str(SAMPLES / "roadscene"), "--model", str(run / "pipeline"), "--out", str(tmp_path / "out")])
    assert "3 written" in capsys.readouterr().out
    assert len(list((tmp_path / "out").glob("*.png"))) == 3


def test_resume_replays_exactly(tmp_path):
    """Interrupted after step 2 and re-run: the same weights as an uninterrupted run (the generator's dropout draws
    from the step's generator, not from the global RNG, which a resumed process starts afresh)."""
    import shutil

    from safetensors.torch import load_file

    from thermosynth.training import DataConfig, train
    from thermosynth.training.checkpoint import checkpoint_dirs

    data = DataConfig(paths=[str(write_pairs(tmp_path / "pairs"))], split=None)
    fast = dict(steps=4, batch_size=2, crop_size=128, checkpoint_every=2, validate_every=4, log_every=1,
                warmup_steps=1)
    train(make_config("pix2pix", "tiny", output_dir=str(tmp_path / "full"), data=data, **fast))
    shutil.copytree(tmp_path / "full", tmp_path / "resumed")
    shutil.rmtree(tmp_path / "resumed" / "checkpoints" / "step-0000004")
    shutil.rmtree(tmp_path / "resumed" / "pipeline")
    torch.manual_seed(12345)  # a resumed process's global RNG is wherever it happens to be
    train(make_config("pix2pix", "tiny", output_dir=str(tmp_path / "resumed"), data=data, **fast))
    last = [checkpoint_dirs(tmp_path / run)[-1] / "model.safetensors" for run in ("full", "resumed")]
    original, resumed = (load_file(path) for path in last)
    assert all(torch.equal(original[k], resumed[k]) for k in original)
