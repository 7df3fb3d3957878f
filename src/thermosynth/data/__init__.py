"""Reading, normalising and augmenting visible and thermal images.

Conventions used everywhere in thermosynth (stated once, here):

- tensors are NCHW and hold values in [-1, 1];
- a thermal image has 1 channel; it is repeated to 3 only at the boundary of a 3-channel model (the shared
  autoencoder) and averaged back on the way out;
- a visible image has 3 channels (RGB); grayscale visible images are repeated, alpha is dropped;
- raw thermal values (8-bit or 16-bit radiometric) are mapped to [-1, 1] by one `ThermalNormalization`, which is
  stored in every model config so that inference maps outputs back to the same units.
"""

from thermosynth.data.errors import DataError
from thermosynth.data.images import IMAGE_EXTENSIONS, read_thermal, read_visible, save_thermal
from thermosynth.data.normalization import ThermalNormalization
from thermosynth.data.sources import (
    PairRecord,
    ThermalRecord,
    folder_pairs,
    hituav_frames,
    llvip_pairs,
    load_pairs,
    load_thermal_images,
    manifest_pairs,
    roadscene_pairs,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "DataError",
    "PairRecord",
    "ThermalNormalization",
    "ThermalRecord",
    "folder_pairs",
    "hituav_frames",
    "llvip_pairs",
    "load_pairs",
    "load_thermal_images",
    "manifest_pairs",
    "read_thermal",
    "read_visible",
    "roadscene_pairs",
    "save_thermal",
]
