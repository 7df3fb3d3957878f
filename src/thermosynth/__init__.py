"""thermosynth: thermal infrared image synthesis with latent diffusion."""

__version__ = "0.1.0"

PIPELINES = ("VisibleToThermalPipeline", "TextToThermalPipeline", "Pix2PixPipeline", "IdentityFacePipeline",
             "PairedFacePipeline")

__all__ = [*PIPELINES, "__version__"]


def __getattr__(name):
    # Imported lazily so that `import thermosynth` (and the CLI's --help) does not pay for importing diffusers.
    if name in PIPELINES:
        import thermosynth.pipelines as pipelines

        return getattr(pipelines, name)
    raise AttributeError(f"module 'thermosynth' has no attribute {name!r}")
