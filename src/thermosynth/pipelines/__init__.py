from thermosynth.pipelines.visible_to_thermal import VisibleToThermalPipeline

__all__ = ["VisibleToThermalPipeline"]
