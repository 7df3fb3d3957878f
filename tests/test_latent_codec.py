"""The latent codec: scale and shift from the VAE config, thermal at the boundary, every user going through it."""

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, UNet2DModel

from thermosynth.models.latent_codec import LatentCodec, as_codec_input, v2t_unet_input
from thermosynth.pipelines import VisibleToThermalPipeline

from conftest import sd_layout_vae


def test_latents_are_the_shifted_and_scaled_posterior_mode_and_decode_inverts_that():
    vae = sd_layout_vae(shift_factor=0.25)
    codec = LatentCodec(vae)
    images = torch.rand(2, 3, 32, 40) * 2 - 1
    with torch.no_grad():
        mode = vae.encode(images).latent_dist.mode()
        latents = codec.encode(images)
        torch.testing.assert_close(latents, (mode - 0.25) * 0.18215)
        assert latents.shape == (2, 4, 4, 5) and codec.downsampling == 8
        torch.testing.assert_close(codec.decode(latents), vae.decode(mode).sample, rtol=1e-5, atol=1e-5)


def test_thermal_enters_as_three_equal_channels_and_leaves_as_their_mean():
    codec = LatentCodec(sd_layout_vae())
    thermal = torch.rand(2, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(codec.encode(thermal), codec.encode(thermal.repeat(1, 3, 1, 1)))
        latents = codec.encode(thermal) * 40  # far out, so that the decoder leaves [-1, 1]
        decoded = codec.decode(latents)
        assert decoded.abs().max() > 1
        torch.testing.assert_close(codec.decode_thermal(latents), decoded.mean(dim=1, keepdim=True).clamp(-1, 1))
        torch.testing.assert_close(codec.decode_thermal(latents, clamp=False), decoded.mean(dim=1, keepdim=True))
    with pytest.raises(ValueError, match="1 \\(thermal\\) or 3 \\(visible\\) channels, got 2"):
        as_codec_input(torch.zeros(1, 2, 8, 8))
    condition, noisy = torch.zeros(1, 4, 2, 2), torch.ones(1, 4, 2, 2)
    assert v2t_unet_input(noisy, condition)[:, :4].eq(1).all()  # the noisy thermal latent comes first


def test_an_sd_layout_vae_with_a_shift_drops_into_the_translation_pipeline_and_its_training_latents(tmp_path):
    """thermosynth's autoencoder and SD's VAE are interchangeable: the V2T pipeline and its training cache both
    read latents through the codec, shift included."""
    from thermosynth.data.datasets import PairedImages
    from thermosynth.data.normalization import ThermalNormalization
    from thermosynth.training.v2t import LatentPairs

    vae = sd_layout_vae(shift_factor=0.1)
    unet = UNet2DModel(
        in_channels=8, out_channels=4, block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8,
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"), sample_size=8,
    ).eval()
    pipeline = VisibleToThermalPipeline(vae, unet, DDIMScheduler(clip_sample=False))
    pipeline.set_progress_bar_config(disable=True)
    assert pipeline.size_multiple == 16
    rng = np.random.default_rng(0)
    visible = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
    out = pipeline(visible, num_inference_steps=2, output_type="np").images
    assert out.shape == (1, 40, 56, 1) and np.isfinite(out).all()

    thermal = rng.integers(0, 256, (64, 64), dtype=np.uint8)
    pairs = PairedImages([(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), thermal)], ThermalNormalization())
    cached = LatentPairs(pairs, vae, min_size=32)
    visible_tensor, thermal_tensor = pairs.pair(0)
    with torch.no_grad():
        torch.testing.assert_close(cached.visible[0], pipeline.codec.encode(visible_tensor[None])[0])
        torch.testing.assert_close(cached.thermal[0], pipeline.codec.encode(thermal_tensor[None])[0], rtol=1e-4,
                                   atol=1e-4)
