"""Decoding image files into arrays, with errors that name the file.

Thermal images keep their raw values (uint8 or uint16); mapping them to [-1, 1] is the job of
`ThermalNormalization`, so that 8-bit and 16-bit data meet in one place.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image, UnidentifiedImageError

from thermosynth.data.errors import DataError

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
# Refuse absurd inputs before decoding them (decompression bombs, wrong files): 100 megapixels is far above any
# thermal camera.
MAX_PIXELS = 100_000_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
_UMASK = os.umask(0)
os.umask(_UMASK)


def _decode(path: Path) -> np.ndarray:
    """The file's pixels as an (H, W) or (H, W, C) array of its own dtype."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file. Check the path.")
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            array = tifffile.imread(path)
        else:
            with Image.open(path) as image:
                image.load()
                if image.mode in ("I;16", "I;16B", "I;16L"):
                    array = np.array(image, dtype=np.uint16)
                elif image.mode == "I":
                    array = np.array(image, dtype=np.int64)
                elif image.mode in ("L", "RGB", "RGBA", "LA"):
                    array = np.array(image)
                else:
                    array = np.array(image.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise DataError(
            f"{path}: cannot be read as an image ({error}). Replace or delete the file, or pass --skip-bad to skip it."
        ) from error
    if array.ndim not in (2, 3) or array.shape[0] == 0 or array.shape[1] == 0:
        raise DataError(f"{path}: unexpected image shape {array.shape}. Expected a 2-D grayscale or colour image.")
    if array.shape[0] * array.shape[1] > MAX_PIXELS:
        raise DataError(f"{path}: {array.shape[1]}x{array.shape[0]} pixels is larger than thermosynth accepts.")
    if array.dtype == np.int64:  # PIL mode "I" holds 16-bit PNGs on some versions
        if array.min() < 0 or array.max() > 65535:
            raise DataError(f"{path}: 32-bit integer values outside 0..65535 are not supported. Save as 16-bit.")
        array = array.astype(np.uint16)
    if array.dtype not in (np.uint8, np.uint16):
        raise DataError(f"{path}: pixel type {array.dtype} is not supported. Save as 8-bit or 16-bit PNG/TIFF.")
    return array


def _drop_alpha(array: np.ndarray) -> np.ndarray:
    if array.ndim == 3 and array.shape[2] in (2, 4):  # LA or RGBA: the alpha channel carries no thermal signal
        return array[..., :-1]
    return array


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) from the file's header, checked by PIL without decoding the pixels; PIL's own error (of many
    types) when the file is not an image, for the caller to word for its user."""
    with Image.open(path) as image:
        size = image.size
        image.verify()
    return size


def read_thermal(path: str | os.PathLike) -> np.ndarray:
    """Raw thermal values as an (H, W) uint8 or uint16 array.

    Grayscale is taken as it is. A 3-channel file whose channels are equal (a gray image saved as RGB) gives that
    channel. A 3-channel file with different channels is a false-colour rendering, whose temperatures cannot be
    recovered: it is refused.
    """
    array = _drop_alpha(_decode(Path(path)))
    if array.ndim == 3:
        if array.shape[2] == 1 or (np.ptp(array.astype(np.int32), axis=2) == 0).all():
            return np.ascontiguousarray(array[..., 0])
        raise DataError(
            f"{path}: thermal image has differing colour channels (a false-colour palette?). "
            "thermosynth needs the grayscale or radiometric image; export it without a palette."
        )
    return array


def read_visible(path: str | os.PathLike) -> np.ndarray:
    """A visible image as an (H, W, 3) uint8 RGB array (grayscale repeated, alpha dropped, 16-bit scaled)."""
    array = _drop_alpha(_decode(Path(path)))
    if array.dtype == np.uint16:
        array = (array.astype(np.float32) / 257.0).round().astype(np.uint8)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    elif array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return np.ascontiguousarray(array)


def atomic_write(path: Path, write) -> None:
    """Call `write(tmp_path)` and move the result into place, so a crash never leaves half a file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file the permissions open() would
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_thermal(array: np.ndarray, path: str | os.PathLike) -> None:
    """Write an (H, W) uint8 or uint16 array as a grayscale PNG, atomically."""
    if array.ndim != 2 or array.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"expected an (H, W) uint8 or uint16 array, got {array.shape} {array.dtype}")
    atomic_write(Path(path), lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside `folder`, sorted by name; hidden files are ignored."""
    return sorted(
        p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
    )
