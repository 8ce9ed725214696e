"""Convolutional building blocks of the VQGAN family (KEEP_SPEC section 1).

Every block takes and returns feature maps `(N, C, H, W)`; the parameter names match the released
checkpoint (`norm1, conv1, norm2, conv2, conv_out`, `norm, q, k, v, proj_out`, `conv`) so that the
checkpoint converter only renames the top-level modules.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


def group_norm(channels: int, groups: int = 32) -> nn.GroupNorm:
    """GroupNorm with the VQGAN settings: 32 groups (fewer for tiny widths), eps 1e-6, affine."""
    return nn.GroupNorm(num_groups=min(groups, channels), num_channels=channels, eps=1e-6, affine=True)


class ResBlock(nn.Module):
    """Pre-activation residual block: `x' + conv(silu(norm(conv(silu(norm(x))))))`."""

    def __init__(self, in_channels: int, out_channels: int | None = None, *, norm_groups: int = 32):
        super().__init__()
        out_channels = out_channels or in_channels
        self.norm1 = group_norm(in_channels, norm_groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = group_norm(out_channels, norm_groups)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        # 1x1 shortcut only when the width changes (released layout).
        self.conv_out = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Without autograd (inference), activations are updated in place: on CPU at 512 px each
        # fresh (N, 64, 512, 512) tensor costs page faults and a memory pass (docs/speed.md).
        inplace = not torch.is_grad_enabled()
        h = self.conv1(F.silu(self.norm1(x), inplace=inplace))
        h = self.conv2(F.silu(self.norm2(h), inplace=inplace))
        if self.conv_out is not None:
            x = self.conv_out(x)
        return h.add_(x) if inplace else x + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the H*W positions, scale `C ** -0.5`, residual."""

    def __init__(self, channels: int, *, norm_groups: int = 32):
        super().__init__()
        self.norm = group_norm(channels, norm_groups)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height = x.shape[-2]
        h = self.norm(x)
        q, k, v = (rearrange(f(h), "n c h w -> n 1 (h w) c") for f in (self.q, self.k, self.v))
        h = F.scaled_dot_product_attention(q, k, v)  # default scale = C ** -0.5
        h = rearrange(h, "n 1 (h w) c -> n c h w", h=height)
        h = self.proj_out(h)
        return h.add_(x) if not torch.is_grad_enabled() else x + h  # in place: see ResBlock


class Downsample(nn.Module):
    """Halve H and W: zero-pad right/bottom by one, then a stride-2 3x3 conv without padding."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Double H and W: nearest-neighbour x2, then a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
