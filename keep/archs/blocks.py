"""Convolutional building blocks of the VQGAN family (docs/network.md).

Every block takes and returns feature maps `(N, C, H, W)`; the parameter names match the released
checkpoint (`norm1, conv1, norm2, conv2, conv_out`, `norm, q, k, v, proj_out`, `conv`) so that the
checkpoint converter only renames the top-level modules.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

_HALF = (torch.bfloat16, torch.float16)


def half_group_norm(x: torch.Tensor, num_groups: int, weight: torch.Tensor, bias: torch.Tensor, eps: float):
    """Group norm of a bf16 / fp16 input `(N, C, H, W)` in that dtype, outside autocast: the kernel keeps
    its statistics in float32; the weight, the bias and the output are rounded once to the input's dtype."""
    with torch.autocast(x.device.type, enabled=False):
        return F.group_norm(x, num_groups, weight.to(x.dtype), bias.to(x.dtype), eps)


class GroupNorm(nn.GroupNorm):
    """`nn.GroupNorm` (same parameters) that keeps a CUDA input in bf16 / fp16 in that dtype
    (`half_group_norm`); exactly `nn.GroupNorm` otherwise, float32 and the CPU included.

    CUDA autocast lists group_norm among its float32 ops: each norm would copy the convolution's
    half-precision output to float32, normalise into float32, the SiLU would run in float32 and the next
    convolution cast back, about 3.5 times the bytes the same chain moves in half precision, over the
    largest activations (docs/speed.md). CPU autocast keeps group norm in bf16 already, so the CPU is left
    as it is. The input's dtype decides (a half-precision input is autocast's output, or a half network's):
    the network stays a function of its inputs and its weights.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cuda" and x.dtype in _HALF:
            return half_group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
        return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)  # nn.GroupNorm's forward


def group_norm(channels: int, groups: int = 32) -> GroupNorm:
    """GroupNorm with the VQGAN settings: 32 groups (fewer for tiny widths), eps 1e-6, affine."""
    return GroupNorm(num_groups=min(groups, channels), num_channels=channels, eps=1e-6, affine=True)


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
