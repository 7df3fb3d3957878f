import numpy as np
import pytest
import tifffile
from PIL import Image

from thermosynth.data import DataError, ThermalNormalization, read_thermal, read_visible, save_thermal


def test_8bit_round_trip_is_exact():
    norm = ThermalNormalization()
    raw = np.arange(256, dtype=np.uint8).reshape(16, 16)
    x = norm.normalize(raw)
    assert x.min() == -1.0 and x.max() == 1.0
    np.testing.assert_array_equal(norm.denormalize(x), raw)


def test_16bit_fixed_range_round_trip_is_exact():
    norm = ThermalNormalization.fit([np.zeros((2, 2), np.uint16)], mode="fixed", low=7000, high=12000)
    assert norm.bit_depth == 16
    raw = np.linspace(7000, 12000, 5001).astype(np.uint16).reshape(1, -1)
    np.testing.assert_array_equal(norm.denormalize(norm.normalize(raw)), raw)
    # outside the range is clipped, not wrapped
    assert norm.normalize(np.array([[100, 65000]], np.uint16)).tolist() == [[-1.0, 1.0]]


def test_dataset_and_percentile_modes():
    rng = np.random.default_rng(0)
    raws = [rng.integers(low, high, (32, 32)).astype(np.uint16) for low, high in ((8000, 9000), (8500, 10000))]
    dataset = ThermalNormalization.fit(raws, mode="dataset", percentiles=(0.0, 100.0))
    assert (dataset.low, dataset.high) == (float(min(r.min() for r in raws)), float(max(r.max() for r in raws)))
    np.testing.assert_array_equal(dataset.denormalize(dataset.normalize(raws[0])), raws[0])

    per_image = ThermalNormalization.fit(raws, mode="percentile", percentiles=(0.0, 100.0))
    for raw in raws:  # every frame is stretched to the full model range
        x = per_image.normalize(raw)
        assert x.min() == -1.0 and x.max() == 1.0
    assert per_image.low == pytest.approx(np.mean([r.min() for r in raws]))


def test_normalisation_survives_serialisation():
    norm = ThermalNormalization("dataset", 16, 100.0, 900.0, (2.0, 98.0))
    assert ThermalNormalization.from_dict(norm.to_dict()) == norm


def test_mixed_bit_depths_are_refused():
    with pytest.raises(DataError, match="mixes 8-bit and 16-bit"):
        ThermalNormalization.fit([np.zeros((2, 2), np.uint8), np.zeros((2, 2), np.uint16)])
    with pytest.raises(DataError, match="16-bit"):
        ThermalNormalization(bit_depth=16, high=65535).normalize(np.zeros((2, 2), np.uint8))


def test_read_thermal_formats(tmp_path):
    gray = (np.arange(48).reshape(6, 8) * 5).astype(np.uint8)
    Image.fromarray(gray).save(tmp_path / "gray.png")
    Image.fromarray(np.stack([gray] * 3, 2)).save(tmp_path / "rgb.png")
    Image.fromarray(np.dstack([gray, gray, gray, np.full_like(gray, 7)])).save(tmp_path / "rgba.png")
    radiometric = (np.arange(48).reshape(6, 8) * 1000 + 3).astype(np.uint16)
    Image.fromarray(radiometric).save(tmp_path / "radiometric.png")
    tifffile.imwrite(tmp_path / "radiometric.tiff", radiometric)

    for name in ("gray.png", "rgb.png", "rgba.png"):
        out = read_thermal(tmp_path / name)
        assert out.dtype == np.uint8
        np.testing.assert_array_equal(out, gray)
    for name in ("radiometric.png", "radiometric.tiff"):
        out = read_thermal(tmp_path / name)
        assert out.dtype == np.uint16
        np.testing.assert_array_equal(out, radiometric)


def test_false_colour_thermal_is_refused(tmp_path):
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb).save(tmp_path / "ironbow.png")
    with pytest.raises(DataError, match="ironbow.png.*false-colour"):
        read_thermal(tmp_path / "ironbow.png")


def test_read_visible_channels(tmp_path):
    gray = np.full((5, 7), 100, np.uint8)
    Image.fromarray(gray).save(tmp_path / "g.png")
    Image.fromarray(np.zeros((5, 7, 4), np.uint8)).save(tmp_path / "a.png")
    assert read_visible(tmp_path / "g.png").shape == (5, 7, 3)
    assert read_visible(tmp_path / "a.png").shape == (5, 7, 3)


def test_save_thermal_16bit_round_trip(tmp_path):
    raw = np.array([[0, 1, 65535], [1234, 40000, 7]], np.uint16)
    save_thermal(raw, tmp_path / "out.png")
    np.testing.assert_array_equal(read_thermal(tmp_path / "out.png"), raw)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left behind


def test_corrupt_file_error_names_it(tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    with pytest.raises(DataError, match=r"broken\.jpg.*--skip-bad"):
        read_visible(tmp_path / "broken.jpg")


def test_poorly_fitting_thermal_range_is_warned_about(caplog):
    """16-bit radiometric data mapped over the full bit depth uses a sliver of the range; a range far too narrow
    clips most pixels. Both are warned about with the measured fractions; a good fit is not."""
    import logging

    from thermosynth.data.loading import fit_normalization

    rng = np.random.default_rng(0)
    radiometric = [rng.normal(30000, 300, (32, 32)).clip(0, 65535).astype(np.uint16) for _ in range(3)]
    caplog.set_level(logging.WARNING, logger="thermosynth")
    fit_normalization(radiometric, "fixed", None)
    assert "fits the data poorly" in caplog.text and "of the model's range" in caplog.text
    caplog.clear()
    fit_normalization(radiometric, "fixed", (29990, 30010))  # far too narrow: most pixels clip
    assert "fits the data poorly" in caplog.text
    caplog.clear()
    fit_normalization(radiometric, "dataset", None)
    assert "fits the data poorly" not in caplog.text
