"""Training on accelerate: one module per task, one shared loop (loop.py), typed configs with presets."""

from thermosynth.training.config import (
    PRESETS,
    AutoencoderTrainConfig,
    DataConfig,
    FaceTrainConfig,
    Pix2PixTrainConfig,
    T2IRTrainConfig,
    V2TTrainConfig,
    make_config,
)

__all__ = ["PRESETS", "AutoencoderTrainConfig", "DataConfig", "FaceTrainConfig", "Pix2PixTrainConfig",
           "T2IRTrainConfig", "V2TTrainConfig", "make_config", "train"]


def train(config):
    """Run the training task that `config` describes; returns the exported model folder."""
    if isinstance(config, AutoencoderTrainConfig):
        from thermosynth.training.autoencoder import train as train_autoencoder

        return train_autoencoder(config)
    if isinstance(config, V2TTrainConfig):
        from thermosynth.training.v2t import train as train_v2t

        return train_v2t(config)
    if isinstance(config, Pix2PixTrainConfig):
        from thermosynth.training.pix2pix import train as train_pix2pix

        return train_pix2pix(config)
    if isinstance(config, T2IRTrainConfig):
        from thermosynth.training.t2ir import train as train_t2ir

        return train_t2ir(config)
    if isinstance(config, FaceTrainConfig):
        from thermosynth.training.faces import train as train_faces

        return train_faces(config)
    raise TypeError(f"no training task for {type(config).__name__}")
