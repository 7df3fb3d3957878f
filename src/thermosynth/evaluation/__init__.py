"""Metrics, each as a torchmetrics `Metric` (update / compute / reset, float64 sums) with a function form beside it.

Paired translation metrics (SSIM / PSNR / MAE), distribution metrics (Fréchet distance, KID) on offline
EfficientNet-Lite0 features, thermal consistency (hot-region IoU and statistics, intensity histogram distance), face
verification (VR at fixed FAR, Rank-1; SFace / dlib / ArcFace embedders), FID and LPIPS when their weights are local
(optional.py), unpaired set comparison (unpaired.py) and the `thermosynth evaluate` report (report.py).
"""

from thermosynth.evaluation.distribution import frechet_distance, frechet_distance_metric, kernel_distance_metric
from thermosynth.evaluation.faces import FaceVerification, verification_metrics
from thermosynth.evaluation.paired import PairedThermalMetrics, paired_metrics
from thermosynth.evaluation.thermal import HotRegionIoU, HotRegionStatistics, IntensityHistogramDistance

__all__ = [
    "FaceVerification",
    "HotRegionIoU",
    "HotRegionStatistics",
    "IntensityHistogramDistance",
    "PairedThermalMetrics",
    "frechet_distance",
    "frechet_distance_metric",
    "kernel_distance_metric",
    "paired_metrics",
    "verification_metrics",
]
