"""The adversarial terms shared by every task that trains a PatchGAN beside its network (pix2pix, the autoencoder).

Both networks are updated from one backward pass: the discriminator's loss sees the fake images detached, and the
adversarial term runs the discriminator with detached parameters (`torch.func.functional_call`), so each network's
gradient comes only from its own loss. That is the simultaneous-update form of the alternating steps of a GAN, and
it lets the shared loop (one module, one optimizer) train one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.func import functional_call


def gan_loss(logits: torch.Tensor, real: bool) -> torch.Tensor:
    """The non-saturating GAN loss: BCE of the logits against 'real' (1) or 'fake' (0)."""
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits.float(), target.float())


def adversarial_losses(discriminator: torch.nn.Module, real: torch.Tensor,
                       fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss_D, loss_G): loss_D = (BCE(D(real), 1) + BCE(D(fake), 0)) / 2, which trains only the discriminator, and
    loss_G = BCE(D(fake), 1), which trains only what made `fake`."""
    loss_d = 0.5 * (gan_loss(discriminator(real), True) + gan_loss(discriminator(fake.detach()), False))
    frozen = {name: p.detach() for name, p in discriminator.named_parameters()}
    loss_g = gan_loss(functional_call(discriminator, frozen, (fake,)), True)
    return loss_d, loss_g
