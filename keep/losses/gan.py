"""GAN losses chosen by name, the adaptive GAN weight, and the discriminators (2-D PatchGAN, 3-D).

Discriminators take images `(N, 3, H, W)` (2-D) or clips `(B, 3, T, H, W)` (3-D) in [-1, 1] and
return patch logits.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import KeepError


def hinge_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1 - real).mean() + F.relu(1 + fake).mean())


def hinge_g(fake: torch.Tensor) -> torch.Tensor:
    return -fake.mean()


def nonsaturating_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.softplus(-real).mean() + F.softplus(fake).mean())


def nonsaturating_g(fake: torch.Tensor) -> torch.Tensor:
    return F.softplus(-fake).mean()


GAN_LOSSES: dict[str, tuple[Callable, Callable]] = {
    "hinge": (hinge_d, hinge_g),
    "nonsaturating": (nonsaturating_d, nonsaturating_g),
}


def gan_losses(name: str) -> tuple[Callable, Callable]:
    """(discriminator loss(real, fake), generator loss(fake)) by name."""
    if name not in GAN_LOSSES:
        raise KeepError(f"unknown GAN loss '{name}'; choose one of {list(GAN_LOSSES)}")
    return GAN_LOSSES[name]


def adaptive_weight(
    rec_loss: torch.Tensor,
    g_loss: torch.Tensor,
    last_layer: torch.Tensor,
    *,
    max_weight: float = 1e4,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """taming-transformers' balance: |grad rec| / |grad gan| at the decoder's last layer (detached).

    reduce: averages a gradient over data-parallel processes, so the weight is that of the whole batch."""
    rec_grad = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    if reduce is not None:
        rec_grad, g_grad = reduce(torch.stack([rec_grad, g_grad])).unbind(0)
    weight = rec_grad.norm() / (g_grad.norm() + 1e-4)
    return weight.clamp(0.0, max_weight).detach()


def _norm(kind: str, ch: int) -> nn.Module:
    return nn.GroupNorm(min(32, ch // 4) or 1, ch) if kind == "group" else nn.Identity()


class PatchDiscriminator2D(nn.Module):
    """PatchGAN (pix2pix): image `(N, 3, H, W)` -> logits `(N, 1, H / 2**layers - 2, ...)`."""

    def __init__(self, *, nf: int = 64, layers: int = 3):
        super().__init__()
        blocks: list[nn.Module] = [nn.Conv2d(3, nf, 4, 2, 1), nn.LeakyReLU(0.2)]
        ch = nf
        for i in range(1, layers + 1):
            out = nf * min(2**i, 8)
            stride = 2 if i < layers else 1
            blocks += [nn.Conv2d(ch, out, 4, stride, 1), _norm("group", out), nn.LeakyReLU(0.2)]
            ch = out
        blocks.append(nn.Conv2d(ch, 1, 4, 1, 1))
        self.net = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class PatchDiscriminator3D(nn.Module):
    """Spatio-temporal PatchGAN: clip `(B, 3, T, H, W)` -> logits `(B, 1, T', h, w)`; strides only in
    space, 3x4x4 kernels mix neighbouring frames so flicker is visible to it."""

    def __init__(self, *, nf: int = 64, layers: int = 3):
        super().__init__()
        blocks: list[nn.Module] = [nn.Conv3d(3, nf, (3, 4, 4), (1, 2, 2), (1, 1, 1)), nn.LeakyReLU(0.2)]
        ch = nf
        for i in range(1, layers + 1):
            out = nf * min(2**i, 8)
            stride = (1, 2, 2) if i < layers else (1, 1, 1)
            blocks += [nn.Conv3d(ch, out, (3, 4, 4), stride, (1, 1, 1)), _norm("group", out), nn.LeakyReLU(0.2)]
            ch = out
        blocks.append(nn.Conv3d(ch, 1, (3, 4, 4), 1, (1, 1, 1)))
        self.net = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


DISCRIMINATORS: dict[str, type[nn.Module]] = {"patch2d": PatchDiscriminator2D, "patch3d": PatchDiscriminator3D}
# What each discriminator judges of a clip batch (B, T, 3, H, W): frames one by one, or whole clips.
CLIP_LAYOUT: dict[str, str] = {"patch2d": "b t c h w -> (b t) c h w", "patch3d": "b t c h w -> b c t h w"}


def build_discriminator(name: str, *, nf: int, layers: int) -> nn.Module:
    if name not in DISCRIMINATORS:
        raise KeepError(f"unknown discriminator '{name}'; choose one of {list(DISCRIMINATORS)}")
    return DISCRIMINATORS[name](nf=nf, layers=layers)
