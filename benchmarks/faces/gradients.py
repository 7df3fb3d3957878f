"""How hard does the identity loss pull, and does the trained generator's predicted face depend on who it is asked for?

For one training batch of a face run (the batch step 7 of its seed draws), at three bands of noise levels, prints:
the noise loss and its gradient norm over the UNet's parameters; W times the identity loss (training/faces.py's L_id)
and its gradient norm; SFace's cosine between the predicted clean face and the photo's own vector, and its mean cosine
with the vectors of the batch's other people (the gap is how much the predicted face is that person, not anyone).

    python benchmarks/faces/gradients.py RUN_DIR [--identity-loss-weight W]

RUN_DIR is a `thermosynth train faces` run folder (its config.json, identity cache and exported pipeline). Needs the
CFP data the run trained on. Read-only: nothing is written to the run folder.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel

from thermosynth.models.sface_network import SFaceNetwork
from thermosynth.training.config import load_config
from thermosynth.training.diffusion import pixel_noise_schedule, prediction_target
from thermosynth.training.faces import build_task, identity_loss, predicted_identity_cosines
from thermosynth.training.loop import step_generator

NOISE_BANDS = ((0, 300), (300, 700), (700, 1000))


def gradient_norm(loss: torch.Tensor, params: list[torch.nn.Parameter]) -> float:
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return torch.sqrt(sum((g.float() ** 2).sum() for g in grads if g is not None)).item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--identity-loss-weight", type=float, default=None,
                        help="W to report W x identity loss with (default: the run's own, or 0.05 if it had none)")
    args = parser.parse_args()
    config = load_config(args.run / "config.json")
    weight = args.identity_loss_weight or config.identity_loss_weight or 0.05
    config.identity_loss_weight = weight  # the batch then carries the identity loss's fields
    task = build_task(config)
    unet = UNet2DConditionModel.from_pretrained(args.run / "pipeline" / "unet")  # the exported (EMA) weights
    params = [p for p in unet.parameters() if p.requires_grad]
    scheduler = pixel_noise_schedule(config.num_train_timesteps)
    sface = SFaceNetwork()
    print(f"{args.run}: step {config.steps}, W = {weight}")
    print("| noise levels t | MSE | MSE gradient | W x identity loss | its gradient | cos, own vector "
          "| cos, other people's |")
    print("|---|---|---|---|---|---|---|")
    for low, high in NOISE_BANDS:
        generator = step_generator(config.seed, 0, 7)  # the same batch in every band and every run
        batch = task.draw_batch(generator)
        images = batch["images"]
        noise = torch.randn(images.shape, generator=generator)
        timesteps = torch.randint(low, high, (len(images),), generator=generator)
        noisy = scheduler.add_noise(images, noise, timesteps)
        prediction = unet(noisy, timesteps, encoder_hidden_states=batch["states"],
                          encoder_attention_mask=batch["mask"], class_labels=batch["class_labels"]).sample
        mse = F.mse_loss(prediction, prediction_target(scheduler, images, noise, timesteps))
        own, others = predicted_identity_cosines(batch, noisy, prediction, timesteps, scheduler, sface)
        weighted = weight * identity_loss(own, others) / len(images)  # as compute_loss adds it
        print(f"| {low}-{high - 1} | {mse.item():.4f} | {gradient_norm(mse, params):.3f} | {weighted.item():.4f} | "
              f"{gradient_norm(weighted, params):.3f} | {own.mean().item():.3f} | {others.mean().item():.3f} |",
              flush=True)


if __name__ == "__main__":
    main()
