import torch

from thermosynth.data import ThermalNormalization
from thermosynth.data.augment import CropSpec
from thermosynth.data.datasets import PairedImages

from conftest import scene


def test_pairs_get_the_same_crop_and_flip():
    # thermal is the visible image's red channel, so any misaligned crop, scale or flip shows up as a difference
    pairs = []
    for seed in range(4):
        visible, _ = scene(60, 90, seed)
        pairs.append((visible, visible[..., 0].copy()))
    images = PairedImages(pairs, ThermalNormalization())
    for crop in (CropSpec(32), CropSpec(32, min_scale=0.7, max_scale=1.5)):
        batch = images.sample(16, crop, torch.Generator().manual_seed(0))
        assert batch["visible"].shape == (16, 3, 32, 32) and batch["thermal"].shape == (16, 1, 32, 32)
        torch.testing.assert_close(batch["thermal"], batch["visible"][:, :1], atol=1e-5, rtol=0)


def test_batches_are_a_function_of_the_generator():
    pairs = [scene(40, 40, s) for s in range(3)]
    images = PairedImages(pairs, ThermalNormalization())
    a = images.sample(4, CropSpec(16), torch.Generator().manual_seed(5))
    b = images.sample(4, CropSpec(16), torch.Generator().manual_seed(5))
    c = images.sample(4, CropSpec(16), torch.Generator().manual_seed(6))
    assert torch.equal(a["visible"], b["visible"]) and not torch.equal(a["visible"], c["visible"])
