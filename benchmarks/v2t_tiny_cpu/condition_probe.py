"""How much does a V2T model use its visible condition? Epsilon-MSE with and without it, by timestep.

Noises the real thermal latents of 8 RoadScene test pairs (192x192 top-left crops) at fixed timesteps and compares the
UNet's noise prediction error given the visible latent versus a zero (dropped) condition. A model that ignores the
visible image shows equal errors.

    python benchmarks/v2t_tiny_cpu/condition_probe.py PIPELINE_DIR [ROADSCENE_ROOT]
"""

import json
import sys

import torch

from thermosynth.data.datasets import PairedImages
from thermosynth.data.loading import load_paired_arrays
from thermosynth.pipelines import VisibleToThermalPipeline
from thermosynth.training.diffusion import noise_schedule

pipeline = VisibleToThermalPipeline.from_pretrained(sys.argv[1])
root = sys.argv[2] if len(sys.argv) > 2 else "../shared/data/roadscene"
pairs = PairedImages(load_paired_arrays([root], "test", False, None)[:8], pipeline.normalization)
scheduler, generator = noise_schedule(), torch.Generator().manual_seed(0)
results = {}
with torch.no_grad():
    latents = []
    for index in range(len(pairs)):
        visible, thermal = (x[:, :192, :192] for x in pairs.pair(index))
        latents.append((pipeline.codec.encode(visible[None]), pipeline.codec.encode(thermal[None])))
    for step in (100, 300, 500, 700, 900):
        errors = {"with_visible": 0.0, "without": 0.0}
        for visible, thermal in latents:
            noise = torch.randn(thermal.shape, generator=generator)
            t = torch.tensor([step])
            noisy = scheduler.add_noise(thermal, noise, t)
            for key, condition in (("with_visible", visible), ("without", torch.zeros_like(visible))):
                prediction = pipeline.unet(torch.cat([noisy, condition], dim=1), t).sample
                errors[key] += ((prediction - noise) ** 2).mean().item() / len(latents)
        results[step] = {k: round(v, 4) for k, v in errors.items()}
print(json.dumps(results))
