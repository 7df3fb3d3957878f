import importlib.util
import json

import numpy as np
import pytest
from PIL import Image

from thermosynth.cli import main
from thermosynth.data import read_thermal

from conftest import SAMPLES, scene


@pytest.fixture
def visible_folder(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for i, (h, w) in enumerate([(20, 36), (20, 36), (27, 19)]):
        Image.fromarray(scene(h, w, i)[0]).save(folder / f"v{i}.jpg")
    return folder


def translate(*args):
    main(["translate", *map(str, args), "--steps", "2"])


def test_translate_folder_then_resume(visible_folder, tiny_pipeline_dir, tmp_path, capsys):
    out = tmp_path / "out"
    translate(visible_folder, "--model", tiny_pipeline_dir, "--out", out, "--palette", "ironbow", "--batch-size", "2")
    assert "3 written" in capsys.readouterr().out
    for i, (h, w) in enumerate([(20, 36), (20, 36), (27, 19)]):
        image = Image.open(out / f"v{i}.png")
        assert (image.size, image.mode) == ((w, h), "L")
        assert Image.open(out / "ironbow" / f"v{i}.png").mode == "RGB"
    translate(visible_folder, "--model", tiny_pipeline_dir, "--out", out, "--palette", "ironbow")
    assert "0 written, 3 already there" in capsys.readouterr().out


def test_a_folder_made_with_other_settings_is_refused_not_mixed(visible_folder, tiny_pipeline_dir, tmp_path,
                                                                capsys):
    """Resuming writes only what is missing, so a run with another step count must neither add to the folder nor
    take its images as its own; the same settings still resume."""
    out = tmp_path / "out"
    translate(visible_folder / "v0.jpg", "--model", tiny_pipeline_dir, "--out", out)
    made = (out / "v0.png").read_bytes()
    with pytest.raises(SystemExit):
        main(["translate", str(visible_folder), "--model", str(tiny_pipeline_dir), "--out", str(out), "--steps", "3"])
    assert "holds translations made with other settings (steps differs; see translate.json)" in capsys.readouterr().err
    assert (out / "v0.png").read_bytes() == made and not (out / "v1.png").exists()
    translate(visible_folder, "--model", tiny_pipeline_dir, "--out", out)
    assert "2 written, 1 already there" in capsys.readouterr().out


def test_outputs_do_not_depend_on_batching(visible_folder, tiny_pipeline_dir, tmp_path):
    translate(visible_folder, "--model", tiny_pipeline_dir, "--out", tmp_path / "a", "--batch-size", "1")
    translate(visible_folder, "--model", tiny_pipeline_dir, "--out", tmp_path / "b", "--batch-size", "3")
    for i in range(3):
        a, b = (np.asarray(Image.open(tmp_path / d / f"v{i}.png"), dtype=int) for d in ("a", "b"))
        assert np.abs(a - b).max() <= 1


def test_sixteen_bit_output(visible_folder, tiny_pipeline_dir, tmp_path):
    translate(visible_folder / "v0.jpg", "--model", tiny_pipeline_dir, "--out", tmp_path, "--bit-depth", "16")
    assert read_thermal(tmp_path / "v0.png").dtype == np.uint16


def test_corrupt_jpeg_is_named(visible_folder, tiny_pipeline_dir, tmp_path, capsys):
    (visible_folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF garbage")
    with pytest.raises(SystemExit) as exit_info:
        translate(visible_folder, "--model", tiny_pipeline_dir, "--out", tmp_path / "out")
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "broken.jpg" in error and "--skip-bad" in error
    translate(visible_folder, "--model", tiny_pipeline_dir, "--out", tmp_path / "out", "--skip-bad")
    assert "3 written, 0 already there, 1 unreadable or too large skipped" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["v0.png", "v1.png", "v2.png"]


def test_paired_data_set_input_uses_its_split(tiny_pipeline_dir, tmp_path):
    translate(SAMPLES / "roadscene", "--split", "test", "--model", tiny_pipeline_dir, "--out", tmp_path)
    made = sorted(p.stem for p in tmp_path.glob("*.png"))
    assert made == sorted((SAMPLES / "roadscene" / "splits" / "test.txt").read_text().split())
    for stem in made:  # written at the input size
        assert Image.open(tmp_path / f"{stem}.png").size == Image.open(
            SAMPLES / "roadscene" / "crop_LR_visible" / f"{stem}.jpg").size


@pytest.mark.parametrize("model, expected", [
    ("{tmp}/nothing-here", "no such folder. Give a pipeline folder"),
    ("{tmp}", "not a thermosynth pipeline folder (no model_index.json)"),
    ("someone/not-cached-anywhere", "the hub id could not be read (LocalEntryNotFoundError: it is not in the local"),
])
def test_missing_model_is_explained_in_one_line(visible_folder, tmp_path, capsys, monkeypatch, model, expected):
    """A missing folder, a folder without a pipeline, and (offline) a hub id that is not cached: one plain line."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(SystemExit) as exit_info:
        translate(visible_folder, "--model", model.format(tmp=tmp_path), "--out", tmp_path / "out")
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert expected in error and len(error.strip().splitlines()) == 1


def test_train_dry_run(capsys, tmp_path):
    main(["train", "autoencoder", "--data", str(SAMPLES / "roadscene"), "--data", str(SAMPLES / "hit-uav"),
          "--out", str(tmp_path / "run"), "--dry-run"])
    out = capsys.readouterr().out
    config = json.loads(out[: out.rindex("}") + 1])
    assert config["task"] == "autoencoder" and config["architecture"] == "tiny"
    assert "9 pairs" in out and "5 thermal images" in out
    assert not (tmp_path / "run").exists()  # a dry run writes nothing


def test_shipped_models_by_name(tmp_path, capsys):
    """`--model` takes the shipped names; the model's recorded settings are the defaults (here steps overridden)."""
    sample = SAMPLES / "roadscene" / "crop_LR_visible" / "FLIR_00018.jpg"
    main(["translate", str(sample), "--model", "v2t-roadscene", "--out", str(tmp_path / "t"), "--steps", "1"])
    with Image.open(sample) as visible, Image.open(tmp_path / "t" / "FLIR_00018.png") as thermal:
        assert thermal.size == visible.size and thermal.mode == "L"
    main(["generate", "two cars on a road", "--model", "t2ir-hituav", "-n", "1", "--steps", "1",
          "--out", str(tmp_path / "g")])
    with Image.open(tmp_path / "g" / "0000.png") as generated:
        assert generated.size == (320, 256)


@pytest.mark.parametrize("bad", [["--batch-size", "0"], ["--steps", "0"], ["--out", "FILE"]])
def test_bad_arguments_are_refused_before_loading(visible_folder, tmp_path, capsys, bad):
    """A zero batch size or step count, or an output 'folder' that is a file, stops at argument parsing with a plain
    message (the model named here does not exist: it is never reached)."""
    (tmp_path / "FILE").write_text("not a folder")
    arguments = {"--out": str(tmp_path / "out"), "--batch-size": "1", "--steps": "1"}
    arguments[bad[0]] = str(tmp_path / "FILE") if bad[1] == "FILE" else bad[1]
    with pytest.raises(SystemExit) as stop:
        main(["translate", str(visible_folder), "--model", str(tmp_path / "no-model"),
              *[item for pair in arguments.items() for item in pair]])
    assert stop.value.code == 2
    message = capsys.readouterr().err
    assert ("is a file, not a folder" in message) if bad[1] == "FILE" else ("must be at least 1, got 0" in message)


@pytest.mark.parametrize("device, expected", [
    ("banana", "'banana': not a device name; use cpu, cuda or cuda:N"),
    ("cuda", "'cuda': this torch cannot use a CUDA GPU"),
])
def test_a_device_torch_cannot_use_is_refused_before_loading(visible_folder, tmp_path, capsys, device, expected):
    """torch's own errors came after the model loaded: an AssertionError, or a list of every device type it knows."""
    import torch

    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    with pytest.raises(SystemExit) as stop:
        main(["translate", str(visible_folder), "--model", str(tmp_path / "no-model"), "--device", device,
              "--out", str(tmp_path / "out")])
    assert stop.value.code == 2 and expected in capsys.readouterr().err


def test_the_clis_scheduler_and_palette_names_are_the_librarys():
    """The CLI mirrors these names so that `--help` need not import torch and diffusers: they must not drift."""
    from thermosynth.cli import PALETTE_NAMES, SCHEDULER_NAMES
    from thermosynth.pipelines.visible_to_thermal import SCHEDULERS
    from thermosynth.render import PALETTES

    assert SCHEDULER_NAMES == tuple(SCHEDULERS) and PALETTE_NAMES == PALETTES


def test_unknown_face_view_is_refused_before_the_models_load(visible_folder, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["synthesize", "faces", str(visible_folder), "--model", str(tmp_path / "no-model"), "--thermal-model",
              str(tmp_path / "no-model"), "--out", str(tmp_path / "o"), "--views", "frontal", "sideways"])
    assert stop.value.code != 0
    message = capsys.readouterr().err
    assert "views must be some of frontal, profile_left, profile_right" in message and "no-model" not in message


def test_huge_image_is_refused_before_the_model_loads(tmp_path, capsys):
    """Over --max-pixels: a plain error with the size and the flag, before loading anything (the model named here
    does not exist); raising the limit gets past the check to the model."""
    big = tmp_path / "in" / "huge.jpg"
    big.parent.mkdir()
    Image.new("RGB", (2100, 2000), (90, 120, 60)).save(big)
    with pytest.raises(SystemExit):
        main(["translate", str(big.parent), "--model", str(tmp_path / "no-model"), "--out", str(tmp_path / "o")])
    assert "2100x2000 is 4.2 million pixels, over the limit of 4.0 million" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["translate", str(big.parent), "--model", str(tmp_path / "no-model"), "--out", str(tmp_path / "o"),
              "--max-pixels", "5000000"])
    assert "no such folder" in capsys.readouterr().err


def test_truncated_weights_are_named_with_the_fix(visible_folder, tiny_pipeline_dir, tmp_path, capsys):
    import shutil

    broken = tmp_path / "pipeline"
    shutil.copytree(tiny_pipeline_dir, broken)
    weights = next((broken / "unet").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(SystemExit) as exit_info:
        translate(visible_folder, "--model", broken, "--out", tmp_path / "out")
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert str(weights) in error and "truncated or corrupted" in error and "re-run the `thermosynth train`" in error
    assert "Traceback" not in error and error.count("error: ") == 1  # one line (beside diffusers' loading bars)


def test_paired_folder_translates_without_its_thermal_side(tiny_pipeline_dir, tmp_path, capsys):
    """A visible/ folder beside no thermal images (or none at all) is still a set of inputs to translate."""
    root = tmp_path / "set"
    (root / "visible").mkdir(parents=True)
    (root / "thermal").mkdir()
    for i in range(2):
        Image.fromarray(scene(24, 40, i)[0]).save(root / "visible" / f"v{i}.jpg")
    translate(root, "--model", tiny_pipeline_dir, "--out", tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["v0.png", "v1.png"]


def test_failed_generate_leaves_no_record(tmp_path, capsys):
    """A generate that stops before its first image (here: no such model) leaves no generate.json to refuse the
    corrected command with."""
    out = tmp_path / "out"
    with pytest.raises(SystemExit):
        main(["generate", "a car", "--model", str(tmp_path / "no-such-model"), "--out", str(out)])
    assert not (out / "generate.json").exists()


@pytest.mark.skipif(not importlib.util.find_spec("kernels"),
                    reason="the warning comes from `kernels`, which bitsandbytes brings")
def test_a_bad_data_folder_is_the_only_thing_said(tmp_path):
    """A fresh process (bitsandbytes warns once, when transformers first imports it): the error, and no warning of
    an optional kernel that cannot be fetched offline."""
    import os
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "thermosynth.cli", "train", "autoencoder", "--data",
                             str(tmp_path / "missing"), "--out", str(tmp_path / "run"), "--preset", "tiny"],
                            capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [f"error: {tmp_path / 'missing'}: not a folder or a .jsonl manifest."]
