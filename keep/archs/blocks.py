"""Convolutional building blocks of the VQGAN family (docs/network.md).

Every block takes and returns feature maps `(N, C, H, W)`; the parameter names match the released
checkpoint (`norm1, conv1, norm2, conv2, conv_out`, `norm, q, k, v, proj_out`, `conv`) so that the
checkpoint converter only renames the top-level modules.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

# Device types on which group norm runs in autocast's bf16 / fp16 instead of float32 (issue 20,
# docs/speed.md). CUDA autocast lists group_norm among its float32 ops: each norm then copies the
# conv's half-precision output to float32, normalises into float32, the SiLU runs in float32 and the
# next conv casts back, about 3.5 times the bytes the same chain moves in half precision, over the
# largest activations. The half-precision kernel still accumulates its statistics in float32. CPU
# autocast keeps group norm in bf16 already, so the CPU is left as it is (`norm_in_autocast_dtype`
# changes this set for a while: tests, benchmarks).
_NORM_IN_AUTOCAST_DTYPE: set[str] = {"cuda"}
_HALF = (torch.bfloat16, torch.float16)


@contextlib.contextmanager
def norm_in_autocast_dtype(device_types: Iterable[str]) -> Iterator[None]:
    """Group norm in autocast's dtype on `device_types` only, for the duration (restored after)."""
    saved = set(_NORM_IN_AUTOCAST_DTYPE)
    _NORM_IN_AUTOCAST_DTYPE.clear()
    _NORM_IN_AUTOCAST_DTYPE.update(device_types)
    try:
        yield
    finally:
        _NORM_IN_AUTOCAST_DTYPE.clear()
        _NORM_IN_AUTOCAST_DTYPE.update(saved)


def _autocast_dtype(device_type: str) -> torch.dtype | None:
    """The dtype autocast runs in on `device_type`, None when it is off."""
    try:
        return torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None
    except (TypeError, AttributeError):  # torch < 2.4: per-device functions
        if device_type == "cpu":
            return torch.get_autocast_cpu_dtype() if torch.is_autocast_cpu_enabled() else None
        return torch.get_autocast_gpu_dtype() if torch.is_autocast_enabled() else None


class GroupNorm(nn.GroupNorm):
    """`nn.GroupNorm` (same parameters) that, under autocast on the device types chosen above, keeps
    an input already in autocast's dtype in that dtype: float32 statistics, the output rounded once
    to bf16 / fp16 (its affine parameters too). Exactly `nn.GroupNorm` otherwise, float32 included."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype in _HALF and x.device.type in _NORM_IN_AUTOCAST_DTYPE and x.dtype == _autocast_dtype(x.device.type):
            with torch.autocast(x.device.type, enabled=False):
                weight, bias = self.weight.to(x.dtype), self.bias.to(x.dtype)
                return F.group_norm(x, self.num_groups, weight, bias, self.eps)
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
