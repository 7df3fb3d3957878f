"""Metrics, each as a torchmetrics `Metric` (update / compute / reset, float64 sums) with a function form beside it.

For now the paired translation metrics; distribution metrics, reports and `thermosynth evaluate` will follow.
"""

from thermosynth.evaluation.paired import PairedThermalMetrics, paired_metrics

__all__ = ["PairedThermalMetrics", "paired_metrics"]
