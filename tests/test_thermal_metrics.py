import numpy as np
import pytest
import torch

from thermosynth.data.masks import HotMaskSpec, hot_mask
from thermosynth.evaluation.thermal import HotRegionIoU, IntensityHistogramDistance


def hot_square(top=20, left=30, size=16, height=64, width=80, seed=0):
    """A noisy cool background with one hot square; returns the image (uint8) and the square's true mask."""
    rng = np.random.default_rng(seed)
    image = np.clip(rng.normal(80, 6, (height, width)), 0, 255)
    truth = np.zeros((height, width), bool)
    truth[top : top + size, left : left + size] = True
    image[truth] = np.clip(rng.normal(200, 6, truth.sum()), 0, 255)
    image[5, 5] = 230  # a single hot pixel: noise, not an object
    return image.astype(np.uint8), truth


def as_batch(*images):
    return torch.stack([torch.from_numpy(i.astype(np.float64))[None] / 127.5 - 1 for i in images])


@pytest.mark.parametrize("spec", [HotMaskSpec("otsu"), HotMaskSpec("percentile", percentile=93.0)])
def test_mask_marks_the_hot_square_and_drops_speckle(spec):
    image, truth = hot_square()
    mask = hot_mask(image, spec)
    iou = (mask & truth).sum() / (mask | truth).sum()
    assert iou > 0.9, iou
    assert not mask[5, 5]  # the isolated hot pixel is removed by the opening
    assert not hot_mask(np.full((8, 8), 100, np.uint8)).any()  # a flat image has no hot region


def test_hot_region_iou():
    a, _ = hot_square(seed=1)
    moved, _ = hot_square(top=28, left=38, seed=2)  # overlaps the first square by 8x8 of 16x16
    metric = HotRegionIoU()
    metric.update(as_batch(a), as_batch(a))
    assert metric.compute()["hot_iou"] == pytest.approx(1.0)
    metric.reset()
    metric.update(as_batch(moved), as_batch(a))
    result = metric.compute()
    assert result["hot_iou"] == pytest.approx(64 / (2 * 256 - 64), abs=0.05)
    assert result["hot_fraction_real"] == pytest.approx(256 / (64 * 80), abs=0.01)
    with pytest.raises(ValueError, match="differ in size"):
        metric.update(as_batch(a), as_batch(a[:32]))


def test_intensity_histogram_distance():
    a, _ = hot_square(seed=3)
    shifted = np.clip(a.astype(int) + 10, 0, 255).astype(np.uint8)
    metric = IntensityHistogramDistance()
    metric.update(as_batch(a), real=True)
    metric.update(as_batch(a), real=False)
    assert metric.compute()["intensity_w1"] == pytest.approx(0.0, abs=1e-12)
    metric.reset()
    metric.update(as_batch(a), real=True)
    for half in (shifted[:32], shifted[32:]):  # an image's two halves, fed apart
        metric.update(as_batch(half), real=False)
    result = metric.compute()
    assert result["intensity_w1"] == pytest.approx(10.0, abs=0.01)
    assert result["mean_intensity_generated"] - result["mean_intensity_real"] == pytest.approx(10.0, abs=0.01)
    metric.reset()
    with pytest.raises(ValueError, match="need both"):
        metric.compute()


def test_hot_region_statistics_of_a_known_square():
    from thermosynth.evaluation.thermal import HotRegionStatistics

    image = torch.full((1, 1, 40, 50), -0.6, dtype=torch.float64)
    image[..., 10:20, 10:30] = 0.6  # 200 of 2000 pixels at grey level 204
    metric = HotRegionStatistics(HotMaskSpec(opening=0))  # no opening: the rectangles keep their corners
    metric.update(image[:, :, :, :25])  # a crop (150 of its 1000 pixels hot) and the whole image
    metric.update(image)
    stats = metric.compute()
    assert stats["hot_mean_intensity"] == pytest.approx(204.0)
    assert stats["hot_fraction"] == pytest.approx((150 / 1000 + 200 / 2000) / 2)


def test_compare_sets_of_the_same_images_is_near_zero():
    from thermosynth.evaluation.unpaired import compare_sets

    real = torch.rand(6, 1, 48, 48, generator=torch.Generator().manual_seed(0)) * 2 - 1
    result = compare_sets(real, real.clone())
    assert abs(result["fd_efficientnet-lite0"]) < 1e-2 and result["intensity_w1"] == pytest.approx(0.0)
    assert result["hot_fraction_real"] == result["hot_fraction_generated"]
    shifted = compare_sets(real, (real + 0.3).clamp(-1, 1))
    assert shifted["fd_efficientnet-lite0"] > 1 and shifted["intensity_w1"] > 10


@pytest.mark.parametrize("chunk", [6, 2, 1])
def test_metrics_do_not_depend_on_batching(chunk):
    """The same six image pairs, fed in one batch, three or six: every accumulated metric is the same."""
    from thermosynth.evaluation.paired import PairedThermalMetrics
    from thermosynth.evaluation.thermal import HotRegionStatistics

    made = as_batch(*(hot_square(top=10 + 4 * i, left=20 + 3 * i, seed=i)[0] for i in range(6)))
    real = as_batch(*(hot_square(seed=10 + i)[0] for i in range(6)))

    def run(size):
        metrics = {"paired": PairedThermalMetrics(), "iou": HotRegionIoU(), "histogram": IntensityHistogramDistance(),
                   "stats": HotRegionStatistics()}
        for start in range(0, 6, size):
            a, b = made[start : start + size], real[start : start + size]
            metrics["paired"].update(a, b)
            metrics["iou"].update(a, b)
            metrics["histogram"].update(b, real=True)
            metrics["histogram"].update(a, real=False)
            metrics["stats"].update(a)
        return {f"{name}/{key}": value for name, metric in metrics.items() for key, value in metric.compute().items()}

    whole, batched = run(6), run(chunk)
    assert whole.keys() == batched.keys()
    for key in whole:
        assert batched[key] == pytest.approx(whole[key], rel=1e-9, abs=1e-9), key
