"""The steps of benchmarks/shipped/recipe.py that run here after a GPU lease: installing the weights that came back,
and choosing the shipped models' steps and guidance on validation data."""

import json
import sys
from pathlib import Path

import pytest

SHIPPED = Path(__file__).parents[1] / "benchmarks" / "shipped"


@pytest.fixture
def recipe(monkeypatch):
    monkeypatch.syspath_prepend(str(SHIPPED))
    import recipe

    yield recipe
    sys.modules.pop("recipe", None)


def test_finish_installs_the_weights_and_keeps_the_model_cards(recipe, tmp_path):
    results = tmp_path / "device" / "results"
    (results / "pretrained" / "v2t-roadscene" / "unet").mkdir(parents=True)
    (results / "pretrained" / "v2t-roadscene" / "unet" / "new.safetensors").write_bytes(b"new" * 10**6)
    (results / "report.json").write_text("{}")
    recipe.split_into_parts(results, tmp_path / "device" / "parts")
    assert len(list((tmp_path / "device" / "parts").iterdir())) == 1
    package = tmp_path / "package"
    (package / "v2t-roadscene" / "unet").mkdir(parents=True)
    (package / "v2t-roadscene" / "unet" / "old.safetensors").write_bytes(b"old")
    (package / "v2t-roadscene" / "README.md").write_text("the card")
    (package / "t2ir-hituav").mkdir()
    (package / "t2ir-hituav" / "model_index.json").write_text("{}")

    recipe.finish(tmp_path / "device" / "parts", tmp_path / "here", package)

    assert (tmp_path / "here" / "device-results" / "report.json").is_file()
    installed = package / "v2t-roadscene"
    assert sorted(p.relative_to(installed).as_posix() for p in installed.rglob("*") if p.is_file()) == [
        "README.md", "unet/new.safetensors"]
    assert (installed / "unet" / "new.safetensors").read_bytes() == b"new" * 10**6
    assert (installed / "README.md").read_text() == "the card"
    assert (package / "t2ir-hituav" / "model_index.json").is_file()  # not in the results: left as it was


def test_sampling_choice_ranks_every_model_and_setting_together_and_is_recorded(recipe, tiny_pipeline_dir,
                                                                                paired_folder, tmp_path):
    import shutil

    from thermosynth.pipelines import load_pipeline
    from thermosynth.pipelines.common import sampling_settings

    other = load_pipeline(str(tiny_pipeline_dir))  # a second model that makes other images: its output layer negated
    other.unet.conv_out.weight.data.neg_()
    other.save_pretrained(tmp_path / "other")
    models = {"first": str(tiny_pipeline_dir), "other": str(tmp_path / "other")}

    choice = recipe.choose_sampling(paired_folder, models, tmp_path / "choice", guidances=(1.0, 3.0), steps=(1, 3))
    table = choice["val"]
    assert [(r["model"], r["guidance"], r["steps"]) for r in table] == [
        (m, g, s) for m in models for g in (1.0, 3.0) for s in (1, 3)]
    for metric, higher in recipe.CHOICE_METRICS.items():  # ranked over both models' rows at once
        best = max(r[metric] for r in table) if higher else min(r[metric] for r in table)
        assert {r[f"rank_{metric}"] for r in table if r[metric] == best} == {1}
        assert sorted(r[f"rank_{metric}"] for r in table)[-1] <= 8
    for row in table:  # each setting's mean rank is the mean of its ranks on the chosen metrics
        assert row["mean_rank"] == pytest.approx(sum(row[f"rank_{m}"] for m in recipe.CHOICE_METRICS)
                                                 / len(recipe.CHOICE_METRICS))
    best_rank = min(r["mean_rank"] for r in table)
    tied = [(r["steps"], r["guidance"], list(models).index(r["model"]), r["model"]) for r in table
            if r["mean_rank"] == best_rank]
    steps, guidance, _, model = min(tied)  # ties: fewer steps, then lower guidance, then the model named first
    assert (choice["model"], choice["num_inference_steps"], choice["guidance_scale"]) == (model, steps, guidance)
    assert len({r["ssim"] for r in table}) == 8  # each model and setting really made its own images
    assert json.loads((tmp_path / "choice" / "table.json").read_text()) == table

    model = tmp_path / "model"
    shutil.copytree(tiny_pipeline_dir, model)
    recipe.record_sampling(model, choice)
    assert sampling_settings(load_pipeline(str(model)), None, None) == (choice["num_inference_steps"],
                                                                        choice["guidance_scale"])
    assert sorted(p.name for p in model.iterdir()) == sorted(p.name for p in tiny_pipeline_dir.iterdir())  # no tmp


def test_t2ir_sampling_choice_ranks_the_gaps_to_the_real_hot_regions_fewer_steps_win(recipe, monkeypatch, tmp_path):
    import decoder  # benchmarks/shipped, on sys.path through the recipe fixture

    calls = []

    def fake_sample_and_score(hit_uav, captions_file, out, every, steps, guidance):  # 2.0, 5.0 equally off; 3.0 best
        calls.append((out, every, steps, guidance))
        off = abs(guidance - 3.0)
        return {"installed": {"images": 7, "fd_efficientnet-lite0": 100 + 10 * off,
                              "kid_efficientnet-lite0": 0.1 + off, "intensity_w1": 5.0,
                              "hot_fraction_generated": 0.5 + 0.01 * off, "hot_fraction_real": 0.5,
                              "hot_mean_intensity_generated": 150 - off, "hot_mean_intensity_real": 150.0}}

    monkeypatch.setattr(decoder, "sample_and_score_t2ir", fake_sample_and_score)
    choice = recipe.choose_t2ir_sampling(tmp_path / "hit-uav", tmp_path / "val.jsonl", tmp_path / "choice", every=3)
    table = choice["val"]
    assert [(r["guidance"], r["steps"]) for r in table] == [
        (g, s) for g in recipe.T2IR_GUIDANCE_CHOICES for s in recipe.T2IR_STEP_CHOICES]
    assert len({out for out, *_ in calls}) == len(table) and {every for _, every, *_ in calls} == {3}
    five = next(r for r in table if r["guidance"] == 5.0)
    assert five["hot_fraction_gap"] == pytest.approx(0.02) and five["hot_grey_gap"] == pytest.approx(2.0)
    assert {r["rank_hot_grey_gap"] for r in table if r["guidance"] == 3.0} == {1}
    # 3.0 x 10 and 3.0 x 20 tie on every metric: the fewer steps win
    assert (choice["model"], choice["num_inference_steps"], choice["guidance_scale"]) == ("t2ir-hituav", 10, 3.0)
    assert json.loads((tmp_path / "choice" / "table.json").read_text()) == table


def test_finish_and_sampling_stop_when_thermosynth_is_imported_from_another_checkout(recipe, tmp_path):
    from thermosynth.pretrained import ROOT

    recipe._refuse_another_checkout(ROOT)  # this checkout's own package: allowed
    with pytest.raises(SystemExit, match="not from this checkout"):
        recipe._refuse_another_checkout(tmp_path / "other-clone" / "src" / "thermosynth" / "pretrained")


def test_carry_counts_what_a_device_call_sends(recipe, tmp_path, capsys):
    """The checkout's tracked and not-ignored files that are present, and each carried path; ignored files and
    tracked files moved out for the lease are not sent."""
    import subprocess

    checkout = tmp_path / "checkout"
    (checkout / "moved").mkdir(parents=True)
    (checkout / ".gitignore").write_text(".shipped/\n")  # 10 bytes
    (checkout / "tracked.py").write_bytes(b"t" * 100)
    (checkout / "moved" / "weights.safetensors").write_bytes(b"w" * 5000)
    subprocess.run(["git", "init", "-q", str(checkout)], check=True)
    subprocess.run(["git", "-C", str(checkout), "add", "."], check=True)
    (checkout / "moved" / "weights.safetensors").unlink()
    (checkout / "untracked.md").write_bytes(b"u" * 50)
    (checkout / ".shipped" / "whl").mkdir(parents=True)
    (checkout / ".shipped" / "whl" / "a.whl").write_bytes(b"a" * 30)
    (checkout / ".shipped" / "whl" / "b.whl").write_bytes(b"b" * 20)
    (checkout / ".shipped" / "data.jsonl").write_bytes(b"d" * 7)  # ignored and not carried

    sizes = recipe.carry_bytes(checkout, [checkout / ".shipped" / "whl"])
    assert sizes == {"checkout": 160, str(checkout / ".shipped" / "whl"): 50}
    assert recipe.print_carry(sizes)
    assert not recipe.print_carry({"checkout": recipe.CARRY_LIMIT_BYTES + 1})
    assert "too much" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="does not exist"):
        recipe.carry_bytes(checkout, [checkout / ".shipped" / "minilm"])
