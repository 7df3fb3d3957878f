import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from thermosynth.evaluation.paired import PairedThermalMetrics, paired_metrics

from conftest import scene


def fixtures():
    rng = np.random.default_rng(0)
    for index, (height, width) in enumerate([(40, 48), (64, 64), (37, 91)]):
        real = scene(height, width, index)[1]
        noisy = np.clip(real.astype(int) + rng.integers(-40, 41, real.shape), 0, 255).astype(np.uint8)
        yield real, noisy
        yield real, rng.integers(0, 256, real.shape).astype(np.uint8)


def as_batch(images):
    return torch.stack([torch.from_numpy(i.astype(np.float64))[None] / 127.5 - 1 for i in images])


@pytest.mark.parametrize("real,generated", list(fixtures()))
def test_agrees_with_scikit_image(real, generated):
    ours = paired_metrics(generated, real)
    ssim = structural_similarity(real, generated, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                 data_range=255)
    assert ours["ssim"] == pytest.approx(ssim, abs=1e-12)
    assert ours["psnr"] == pytest.approx(peak_signal_noise_ratio(real, generated, data_range=255), abs=1e-6)
    assert ours["mae"] == pytest.approx(np.abs(real.astype(float) - generated).mean(), abs=1e-9)


def test_batch_size_does_not_matter():
    rng = np.random.default_rng(1)
    real = [scene(32, 40, i)[1] for i in range(6)]
    generated = [np.clip(r.astype(int) + rng.integers(-30, 31, r.shape), 0, 255).astype(np.uint8) for r in real]
    together = PairedThermalMetrics()
    together.update(as_batch(generated), as_batch(real))
    one_by_one = PairedThermalMetrics()
    for g, r in zip(generated, real, strict=True):
        one_by_one.update(as_batch([g]), as_batch([r]))
    uneven = PairedThermalMetrics()
    uneven.update(as_batch(generated[:1]), as_batch(real[:1]))
    uneven.update(as_batch(generated[1:]), as_batch(real[1:]))
    expected = together.compute()
    for other in (one_by_one, uneven):
        for key, value in other.compute().items():
            assert value == pytest.approx(expected[key], rel=1e-12)
    assert expected["ssim"] == pytest.approx(np.mean([paired_metrics(g, r)["ssim"] for g, r in zip(generated, real,
                                                                                                   strict=True)]))
    together.reset()
    with pytest.raises(ValueError, match="no image pairs"):
        together.compute()


def test_bad_input():
    metric = PairedThermalMetrics()
    with pytest.raises(ValueError, match="differ in size"):
        metric.update(torch.zeros(1, 1, 32, 32), torch.zeros(1, 1, 32, 40))
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        metric.update(torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="larger than 10x10"):
        metric.update(torch.zeros(1, 1, 8, 32), torch.zeros(1, 1, 8, 32))
    with pytest.raises(ValueError, match="no image pairs"):
        metric.compute()
