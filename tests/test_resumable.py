"""The record that keeps a resumable output folder to the settings it was made with (resumable.py)."""

import pytest
import torch

from thermosynth.resumable import check_settings, model_settings, weights_fingerprint, write_settings


def test_weights_fingerprint_names_the_weights_not_the_object(tmp_path):
    """What resumable output folders record as 'model': equal weights agree, one changed weight or another
    precision does not, and a record is compared as JSON (tuples and lists alike)."""
    torch.manual_seed(0)
    network = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    twin = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    twin.load_state_dict(network.state_dict())
    assert weights_fingerprint(network) == weights_fingerprint(twin)
    with torch.no_grad():
        twin[1].bias[0] += 1e-6
    assert weights_fingerprint(network) != weights_fingerprint(twin)
    assert weights_fingerprint(network) != weights_fingerprint(network.to(torch.bfloat16))

    record = tmp_path / "made.json"
    check_settings(record, {"steps": 2}, "images")  # a new folder: nothing to compare with
    write_settings(record, {"steps": 2, "palettes": ("ironbow",)})
    check_settings(record, {"steps": 2, "palettes": ["ironbow"]}, "images")
    with pytest.raises(ValueError, match=r"holds images made with other settings \(seed, steps differ"):
        check_settings(record, {"steps": 3, "palettes": ["ironbow"], "seed": 1}, "images")


def test_a_pipelines_fingerprint_covers_its_decoder(tiny_pipeline):
    """A decoder fine-tuned under the same UNet (`train autoencoder --init-from`) makes other images: a folder made
    before must not be resumed as if the model were the same."""
    import copy

    twin = copy.deepcopy(tiny_pipeline)
    assert model_settings(twin) == model_settings(tiny_pipeline)
    with torch.no_grad():
        twin.vae.decoder.conv_out.bias[0] += 1e-3
    assert model_settings(twin)["model"] != model_settings(tiny_pipeline)["model"]
