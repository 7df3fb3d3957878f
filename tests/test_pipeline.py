import numpy as np
import pytest
import torch
from PIL import Image

from thermosynth.pipelines import VisibleToThermalPipeline
from thermosynth.pipelines.visible_to_thermal import set_scheduler

from conftest import scene


def run(pipeline, image, seed=0, **kwargs):
    kwargs.setdefault("num_inference_steps", 2)
    return pipeline(image, generator=torch.Generator().manual_seed(seed), **kwargs).images


def test_same_seed_same_image(tiny_pipeline):
    visible, _ = scene(32, 32, 0)
    a, b, c = (run(tiny_pipeline, visible, seed, output_type="np") for seed in (1, 1, 2))
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-4


@pytest.mark.parametrize("height,width", [(32, 32), (37, 45), (6, 70)])
def test_any_size_comes_back_at_the_input_size(tiny_pipeline, height, width):
    visible, _ = scene(height, width, 1)
    (image,) = run(tiny_pipeline, Image.fromarray(visible))
    assert image.size == (width, height) and image.mode == "L"


def test_output_types(tiny_pipeline):
    batch = [scene(24, 40, s)[0] for s in range(3)]
    assert run(tiny_pipeline, batch, output_type="np").shape == (3, 24, 40, 1)
    pt = run(tiny_pipeline, batch, output_type="pt")
    assert pt.shape == (3, 1, 24, 40) and pt.min() >= -1 and pt.max() <= 1
    sixteen = run(tiny_pipeline, batch, output_type="pil16")
    assert np.asarray(sixteen[0]).dtype == np.uint16
    # the 16-bit output is the 8-bit one at 257x the resolution, not a different image
    eight = np.asarray(run(tiny_pipeline, batch, output_type="pil")[0]).astype(float)
    assert np.abs(np.asarray(sixteen[0]) / 257.0 - eight).max() <= 1.0


def test_batch_and_single_calls_agree(tiny_pipeline):
    images = [scene(32, 32, s)[0] for s in range(2)]
    together = tiny_pipeline(images, num_inference_steps=2, output_type="np",
                             generator=[torch.Generator().manual_seed(s) for s in (3, 4)]).images
    alone = run(tiny_pipeline, images[1], seed=4, output_type="np")
    np.testing.assert_allclose(together[1], alone[0], atol=1e-5)


def test_guidance_combines_conditional_and_unconditional_predictions(tiny_pipeline, monkeypatch):
    """Each step's prediction is uncond + s (cond - uncond), computed here by hand from the UNet's two halves; the
    unconditional half is the one whose visible latent is zero."""
    visible, _ = scene(32, 32, 2)
    unet_calls, stepped = [], []
    hook = tiny_pipeline.unet.register_forward_hook(
        lambda module, args, out: unet_calls.append((args[0][:, 4:].clone(), out.sample.clone())))
    step = tiny_pipeline.scheduler.step
    monkeypatch.setattr(tiny_pipeline.scheduler, "step",
                        lambda output, *a, **k: stepped.append(output.clone()) or step(output, *a, **k))
    try:
        run(tiny_pipeline, visible, output_type="np", guidance_scale=3.0)
    finally:
        hook.remove()
    assert len(unet_calls) == len(stepped) == 2
    for (condition, prediction), used in zip(unet_calls, stepped, strict=True):
        cond, uncond = prediction.chunk(2)
        assert torch.count_nonzero(condition[1]) == 0 and torch.count_nonzero(condition[0]) > 0
        torch.testing.assert_close(used, uncond + 3.0 * (cond - uncond))


@pytest.mark.parametrize("scale", [0.0, 0.5])
def test_guidance_at_most_one_is_the_conditional_model(tiny_pipeline, scale):
    """diffusers' convention: guidance <= 1 runs the conditional prediction alone (0 used to give the unconditional
    model, which ignores the input image)."""
    visible, _ = scene(32, 32, 2)
    plain = run(tiny_pipeline, visible, output_type="np", guidance_scale=1.0)
    np.testing.assert_array_equal(run(tiny_pipeline, visible, output_type="np", guidance_scale=scale), plain)


def test_dpm_solver(tiny_pipeline):
    pipeline = VisibleToThermalPipeline(**tiny_pipeline.components, thermal_normalization=None)
    set_scheduler(pipeline, "dpm++")
    assert type(pipeline.scheduler).__name__ == "DPMSolverMultistepScheduler"
    pipeline.set_progress_bar_config(disable=True)
    assert run(pipeline, scene(16, 16, 0)[0], output_type="np").shape == (1, 16, 16, 1)
    with pytest.raises(ValueError, match="unknown scheduler"):
        set_scheduler(pipeline, "euler-magic")


def test_save_and_load_round_trip(tiny_pipeline, tmp_path):
    norm = {"mode": "fixed", "bit_depth": 16, "low": 7000.0, "high": 12000.0, "percentiles": [1.0, 99.0]}
    pipeline = VisibleToThermalPipeline(**tiny_pipeline.components, thermal_normalization=norm)
    pipeline.set_progress_bar_config(disable=True)
    pipeline.save_pretrained(tmp_path)
    assert list(tmp_path.rglob("*.safetensors")) and not list(tmp_path.rglob("*.bin"))
    loaded = VisibleToThermalPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert loaded.normalization.to_dict() == norm
    visible = scene(16, 24, 3)[0]
    np.testing.assert_allclose(run(loaded, visible, output_type="np"), run(pipeline, visible, output_type="np"),
                               atol=1e-6)
    raw = np.asarray(run(loaded, visible, output_type="pil16")[0])
    assert raw.min() >= 7000 and raw.max() <= 12000  # 16-bit model outputs its own raw units


def test_bad_inputs(tiny_pipeline):
    with pytest.raises(ValueError, match="same size"):
        tiny_pipeline([scene(16, 16, 0)[0], scene(16, 24, 0)[0]])
    with pytest.raises(ValueError, match="output_type"):
        tiny_pipeline(scene(16, 16, 0)[0], output_type="jpeg")
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        tiny_pipeline(torch.zeros(1, 1, 16, 16))


def test_channel_mismatch_is_explained(tiny_pipeline):
    from diffusers import UNet2DModel

    wrong = UNet2DModel(in_channels=4, out_channels=4, block_out_channels=(16, 32), layers_per_block=1,
                        norm_num_groups=8, down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2)
    pipeline = VisibleToThermalPipeline(tiny_pipeline.vae, wrong, tiny_pipeline.scheduler)
    with pytest.raises(ValueError, match="in_channels is 4 but thermal latent \\+ visible latent channels are 8"):
        pipeline(scene(16, 16, 0)[0])


def test_inference_precision_is_explicit(tiny_pipeline_dir, caplog):
    """fp32 on the CPU unless asked; the precision used is logged; 16-bit output keeps fp32 by default."""
    import argparse
    import logging

    from thermosynth.cli import _dtype
    from thermosynth.pipelines import load_pipeline, prepare_for_inference

    caplog.set_level(logging.INFO, logger="thermosynth")
    plain = prepare_for_inference(load_pipeline(str(tiny_pipeline_dir)), "cpu")
    assert plain.unet.dtype == plain.vae.dtype == torch.float32 and "inference on cpu in fp32" in caplog.text
    half = prepare_for_inference(load_pipeline(str(tiny_pipeline_dir)), "cpu", dtype="bf16")
    assert half.unet.dtype == half.vae.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="dtype must be one of"):
        prepare_for_inference(load_pipeline(str(tiny_pipeline_dir)), "cpu", dtype="int8")
    assert _dtype(argparse.Namespace(dtype=None, bit_depth=16)) == "fp32"
    assert _dtype(argparse.Namespace(dtype="bf16", bit_depth=16)) == "bf16"
    assert _dtype(argparse.Namespace(dtype=None, bit_depth=8)) is None  # the device's default
