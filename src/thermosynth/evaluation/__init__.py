"""Metrics, each as a torchmetrics `Metric` (update / compute / reset, float64 sums) with a function form beside it.

So far: paired translation metrics (SSIM / PSNR / MAE), distribution metrics (Fréchet distance, KID) on offline
EfficientNet-Lite0 features, thermal consistency (hot-region IoU, intensity histogram distance), face verification
(VR at fixed FAR, Rank-1), and the `thermosynth evaluate` report (report.py).
"""

from thermosynth.evaluation.distribution import frechet_distance, frechet_distance_metric, kernel_distance_metric
from thermosynth.evaluation.faces import FaceVerification, verification_metrics
from thermosynth.evaluation.paired import PairedThermalMetrics, paired_metrics
from thermosynth.evaluation.thermal import HotRegionIoU, IntensityHistogramDistance

__all__ = [
    "FaceVerification",
    "HotRegionIoU",
    "IntensityHistogramDistance",
    "PairedThermalMetrics",
    "frechet_distance",
    "frechet_distance_metric",
    "kernel_distance_metric",
    "paired_metrics",
    "verification_metrics",
]
