"""thermosynth: thermal infrared image synthesis with latent diffusion."""

__version__ = "0.1.0"

__all__ = ["VisibleToThermalPipeline", "__version__"]


def __getattr__(name):
    # Imported lazily so that `import thermosynth` (and the CLI's --help) does not pay for importing diffusers.
    if name == "VisibleToThermalPipeline":
        from thermosynth.pipelines import VisibleToThermalPipeline

        return VisibleToThermalPipeline
    raise AttributeError(f"module 'thermosynth' has no attribute {name!r}")
