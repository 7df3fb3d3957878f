"""Metrics. For now the paired translation metrics; the full harness (distribution metrics, reports) will follow."""

from thermosynth.evaluation.paired import paired_metrics

__all__ = ["paired_metrics"]
