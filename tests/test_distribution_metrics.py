import pytest
import torch

from thermosynth.data import ThermalNormalization
from thermosynth.data.datasets import PairedImages
from thermosynth.data.loading import load_paired_arrays
from thermosynth.evaluation.distribution import (
    frechet_distance,
    frechet_distance_metric,
    kernel_distance_metric,
    metric_name,
)
from thermosynth.evaluation.features import EfficientNetLite0Features

from conftest import SAMPLES


@pytest.fixture(scope="module")
def extractor():
    return EfficientNetLite0Features()


@pytest.fixture(scope="module")
def thermal():
    """The 12 bundled RoadScene thermal images, 128x128 crops, (12, 1, 128, 128) in [-1, 1]."""
    pairs = PairedImages(load_paired_arrays([str(SAMPLES / "roadscene")], None, False, None), ThermalNormalization())
    return torch.stack([pairs.pair(i)[1][:, 64:192, 100:228] for i in range(len(pairs))])


def test_features(extractor, thermal):
    features = extractor(thermal[:3])
    assert features.shape == (3, 1280) and torch.isfinite(features).all()
    torch.testing.assert_close(extractor(thermal[:3].expand(-1, 3, -1, -1)), features)  # gray = repeated
    assert metric_name("fd", extractor) == "fd_efficientnet-lite0"


def test_frechet_distance_is_zero_on_itself_and_grows_with_noise(extractor, thermal):
    generator = torch.Generator().manual_seed(0)
    assert abs(frechet_distance(thermal, thermal, extractor)) < 1e-2
    distances = [
        frechet_distance(thermal, (thermal + sigma * torch.randn(thermal.shape, generator=generator)).clamp(-1, 1),
                         extractor)
        for sigma in (0.05, 0.2, 0.5)
    ]
    assert 1.0 < distances[0] < distances[1] < distances[2]


def test_batch_size_does_not_matter(extractor, thermal):
    noisy = (thermal + 0.2 * torch.randn(thermal.shape, generator=torch.Generator().manual_seed(1))).clamp(-1, 1)
    assert frechet_distance(thermal, noisy, extractor, batch_size=5) == pytest.approx(
        frechet_distance(thermal, noisy, extractor, batch_size=12), rel=1e-4)


def test_kernel_distance(extractor, thermal):
    noisy = (thermal + 0.3 * torch.randn(thermal.shape, generator=torch.Generator().manual_seed(2))).clamp(-1, 1)
    scores = []
    for generated in (thermal, noisy):
        metric = kernel_distance_metric(extractor, subset_size=6, subsets=20)
        metric.update(thermal, real=True)
        metric.update(generated, real=False)
        mean, _ = metric.compute()
        scores.append(float(mean))
    assert abs(scores[0]) < scores[1]


def test_too_few_images(extractor, thermal):
    with pytest.raises(ValueError, match="at least 2 images"):
        frechet_distance(thermal[:1], thermal, extractor)
    assert isinstance(frechet_distance_metric(extractor).inception, EfficientNetLite0Features)
