import json
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from thermosynth.cli import main

from conftest import SAMPLES

ROADSCENE = SAMPLES / "roadscene"
TEST_STEMS = sorted((ROADSCENE / "splits" / "test.txt").read_text().split())


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no FID / LPIPS weights unless a test puts them
    monkeypatch.delenv("THERMOSYNTH_INCEPTION_WEIGHTS", raising=False)


def evaluate(*args):
    main(["evaluate", str(ROADSCENE), "--split", "test", *map(str, args)])


def test_model_is_generated_scored_and_reported(tiny_pipeline_dir, tmp_path, capsys):
    out = tmp_path / "report"
    evaluate("--model", tiny_pipeline_dir, "--out", out, "--steps", "2")
    report = json.loads((out / "report.json").read_text())
    assert report["pairs"] == 3 and report["generation"]["num_inference_steps"] == 2
    for key in ("ssim", "psnr", "mae", "hot_iou", "intensity_w1", "fd_efficientnet-lite0", "kid_efficientnet-lite0"):
        assert key in report["metrics"]
    assert "fid" not in " ".join(report["metrics"]).lower()  # offline features are never called FID
    assert "features" in report["preprocessing"]
    assert report["model"] == f"{tiny_pipeline_dir} (VisibleToThermalPipeline)"
    assert report["environment"]["cpus_usable"] >= 1 and report["environment"]["gpu"] is None  # CPU tests
    reasons = " ".join(report["not_computed"])  # said, not silently dropped
    assert "FID not computed" in reasons and "LPIPS not computed" in reasons
    assert "FID not computed" in (out / "report.md").read_text()
    for name in ("report.md", "grid.png", "histogram.png"):
        assert (out / name).is_file()
    assert sorted(p.stem for p in (out / "generated").glob("*.png")) == TEST_STEMS
    cached = list((tmp_path / "cache" / "thermosynth" / "reference").glob("*.safetensors"))
    assert len(cached) == 1

    before = {p.name: p.stat().st_mtime_ns for p in (out / "generated").glob("*.png")}
    evaluate("--model", tiny_pipeline_dir, "--out", out, "--steps", "2")  # resumes: nothing regenerated
    assert {p.name: p.stat().st_mtime_ns for p in (out / "generated").glob("*.png")} == before
    assert json.loads((out / "report.json").read_text())["metrics"] == report["metrics"]


def test_real_images_score_perfectly(tmp_path):
    generated = tmp_path / "generated"
    generated.mkdir()
    for stem in TEST_STEMS:  # the real thermal images, named like the visible ones, as PNG
        Image.open(ROADSCENE / "cropinfrared" / f"{stem}.jpg").save(generated / f"{stem}.png")
    evaluate("--generated", generated, "--out", tmp_path / "report")
    metrics = json.loads((tmp_path / "report" / "report.json").read_text())["metrics"]
    assert metrics["ssim"] == pytest.approx(1.0) and metrics["mae"] == 0.0
    assert metrics["hot_iou"] == pytest.approx(1.0) and metrics["intensity_w1"] == pytest.approx(0.0)
    assert abs(metrics["fd_efficientnet-lite0"]) < 1e-2


def test_trivial_predictors_are_scored_beside_the_model(tmp_path):
    """Scored as if they were the generated images: the visible image in grayscale, its inverse, and a flat image
    at each real image's mean must give exactly the report's trivial-predictor numbers."""
    from thermosynth.data.images import read_visible
    from thermosynth.evaluation.report import trivial_predictions

    predictors = {}
    for name in ("visible_gray", "visible_gray_inverted", "flat_real_mean"):
        folder = tmp_path / name
        folder.mkdir()
        for stem in TEST_STEMS:
            real = np.asarray(Image.open(ROADSCENE / "cropinfrared" / f"{stem}.jpg").convert("L"))
            real_t = torch.from_numpy(real.astype(np.float64))[None, None] / 127.5 - 1
            visible = read_visible(ROADSCENE / "crop_LR_visible" / f"{stem}.jpg")
            prediction = trivial_predictions(visible, real_t)[name][0, 0]
            Image.fromarray(((prediction + 1) * 127.5).round().clamp(0, 255).numpy().astype(np.uint8)).save(
                folder / f"{stem}.png")
        evaluate("--generated", folder, "--out", tmp_path / f"report-{name}")
        predictors[name] = json.loads((tmp_path / f"report-{name}" / "report.json").read_text())["metrics"]
    report = json.loads((tmp_path / "report-visible_gray" / "report.json").read_text())
    for name, metrics in report["trivial_predictors"].items():
        for key in ("ssim", "psnr", "mae"):
            assert metrics[key] == pytest.approx(predictors[name][key], abs=1e-3 if key == "psnr" else 5e-3), name
    assert report["metrics"]["ssim"] == pytest.approx(report["trivial_predictors"]["visible_gray"]["ssim"], abs=5e-3)
    assert "visible_gray_inverted" in (tmp_path / "report-visible_gray" / "report.md").read_text()


def test_a_single_pair_is_scored_without_the_set_metrics(tmp_path):
    """FD, KID and FID compare sets: with one pair the report says they are missing instead of failing after the
    generation (torchmetrics' KID raises on a set smaller than its subsets)."""
    data = tmp_path / "one"
    shutil.copytree(ROADSCENE, data)
    (data / "splits" / "one.txt").write_text(TEST_STEMS[0] + "\n")
    generated = tmp_path / "generated"
    generated.mkdir()
    Image.open(ROADSCENE / "cropinfrared" / f"{TEST_STEMS[0]}.jpg").save(generated / f"{TEST_STEMS[0]}.png")
    main(["evaluate", str(data), "--split", "one", "--generated", str(generated), "--out", str(tmp_path / "report")])
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["pairs"] == 1 and report["metrics"]["ssim"] == pytest.approx(1.0)
    assert not any(name.startswith(("fd_", "kid_", "fid_")) for name in report["metrics"])
    assert "at least 2 images" in " ".join(report["not_computed"])
    assert "kid" not in report["preprocessing"]


def test_a_second_model_or_setting_never_scores_the_firsts_images(tiny_pipeline_dir, tmp_path, capsys):
    """evaluate --model resumes its generation into OUT/generated: with another step count (or model) in the same
    OUT it used to skip every image as done and report the first run's images under the new settings."""
    evaluate("--model", tiny_pipeline_dir, "--out", tmp_path / "report", "--steps", "1")
    with pytest.raises(SystemExit):
        evaluate("--model", tiny_pipeline_dir, "--out", tmp_path / "report", "--steps", "2")
    assert "holds translations made with other settings (steps differs" in capsys.readouterr().err
    first = json.loads((tmp_path / "report" / "report.json").read_text())
    assert first["generation"]["num_inference_steps"] == 1 and first["made_with"]["steps"] == 1
    # scoring that folder alone still says which model and settings made it
    evaluate("--generated", tmp_path / "report" / "generated", "--out", tmp_path / "rescored")
    rescored = json.loads((tmp_path / "rescored" / "report.json").read_text())
    assert rescored["made_with"] == first["made_with"]
    assert rescored["metrics"]["ssim"] == pytest.approx(first["metrics"]["ssim"], abs=1e-6)  # the same images
    assert f"model {first['made_with']['model']}" in (tmp_path / "rescored" / "report.md").read_text()


def test_missing_generated_image_is_named(tmp_path, capsys):
    generated = tmp_path / "generated"
    generated.mkdir()
    shutil.copy(ROADSCENE / "cropinfrared" / f"{TEST_STEMS[0]}.jpg", generated / f"{TEST_STEMS[0]}.png")
    with pytest.raises(SystemExit):
        evaluate("--generated", generated, "--out", tmp_path / "report")
    error = capsys.readouterr().err
    assert f"{TEST_STEMS[1]}.png: generated image missing" in error and f"({len(TEST_STEMS) - 1} of" in error
    assert "score" not in error  # said before any scoring starts
    with pytest.raises(SystemExit):
        evaluate("--generated", tmp_path / "nowhere", "--out", tmp_path / "report")
    assert "nowhere: no such folder of generated images" in capsys.readouterr().err


def test_a_wrong_split_is_said_before_the_model_loads(tmp_path, capsys, monkeypatch):
    import thermosynth.cli

    monkeypatch.setattr(thermosynth.cli, "_load_pipeline", lambda *args: pytest.fail("the model was loaded"))
    with pytest.raises(SystemExit):
        main(["evaluate", str(ROADSCENE), "--split", "nosuch", "--model", "v2t-roadscene", "--out", str(tmp_path)])
    assert "nosuch.txt: split file not found" in capsys.readouterr().err


def test_needs_exactly_one_source(tmp_path, tiny_pipeline_dir, capsys):
    with pytest.raises(SystemExit):
        evaluate("--out", tmp_path)
    with pytest.raises(SystemExit):
        evaluate("--out", tmp_path, "--model", tiny_pipeline_dir, "--generated", tmp_path)
    assert "exactly one of --model" in capsys.readouterr().err


def test_named_inception_weights_must_exist(tmp_path, capsys):
    for stem in TEST_STEMS:  # a complete folder of generated images: only the weights are wrong
        Image.open(ROADSCENE / "cropinfrared" / f"{stem}.jpg").save(tmp_path / f"{stem}.png")
    with pytest.raises(SystemExit):
        evaluate("--generated", tmp_path, "--out", tmp_path / "report", "--inception-weights", tmp_path / "no.pth")
    assert "Inception weights" in capsys.readouterr().err


@pytest.mark.skipif(not os.environ.get("THERMOSYNTH_TEST_INCEPTION_WEIGHTS"),
                    reason="set THERMOSYNTH_TEST_INCEPTION_WEIGHTS to torch-fidelity's Inception weights to run")
def test_fid_on_inception_of_a_set_against_itself(tmp_path):
    pytest.importorskip("torch_fidelity")
    generated = tmp_path / "generated"
    generated.mkdir()
    for stem in TEST_STEMS:
        Image.open(ROADSCENE / "cropinfrared" / f"{stem}.jpg").save(generated / f"{stem}.png")
    evaluate("--generated", generated, "--out", tmp_path / "report",
             "--inception-weights", os.environ["THERMOSYNTH_TEST_INCEPTION_WEIGHTS"])
    metrics = json.loads((tmp_path / "report" / "report.json").read_text())["metrics"]
    assert abs(metrics["fid_inception-v3"]) < 1e-2


def test_sixteen_bit_data_is_scored_in_the_models_units(tmp_path, capsys):
    """Radiometric 16-bit thermal: a perfect model's 8-bit output (the real image through the model's fixed range)
    scores MAE under half a grey level and its 16-bit output (raw units) MAE 0. Comparing per-image stretched reals
    with model-range outputs, as before, gave a perfect model MAE 17.7 on such data. Without a normalisation, 16-bit
    data is refused with what to give."""
    from thermosynth.data.normalization import ThermalNormalization

    root = tmp_path / "set"
    for folder in ("visible", "thermal", "made8", "made16"):
        (root / folder).mkdir(parents=True)
    rng = np.random.default_rng(0)
    model = ThermalNormalization(mode="fixed", bit_depth=16, low=27000.0, high=33000.0)
    for i in range(3):
        raw = (30000 + rng.normal(0, 800, (48, 64)).cumsum(axis=1) / 8).clip(27000, 33000).astype(np.uint16)
        Image.fromarray(raw).save(root / "thermal" / f"p{i}.png")
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(root / "visible" / f"p{i}.jpg")
        normalized = model.normalize(raw)
        Image.fromarray(np.rint((normalized + 1) * 127.5).astype(np.uint8)).save(root / "made8" / f"p{i}.png")
        Image.fromarray(model.denormalize(normalized)).save(root / "made16" / f"p{i}.png")

    def score(made, *extra):
        main(["evaluate", str(root), "--generated", str(root / made), "--out", str(tmp_path / made), *extra])
        return json.loads((tmp_path / made / "report.json").read_text())

    flags = ("--thermal-range", "27000", "33000")
    eight, sixteen = score("made8", *flags), score("made16", *flags)
    assert eight["metrics"]["mae"] < 0.5 and eight["metrics"]["ssim"] > 0.99
    assert sixteen["metrics"]["mae"] == pytest.approx(0.0, abs=1e-9)
    assert eight["thermal_normalization"]["low"] == 27000.0
    with pytest.raises(SystemExit):
        score("made8")
    assert "is a 16-bit thermal image: say how raw values map" in capsys.readouterr().err
