"""Multi-head attention and GEGLU feed-forward used by the Kalman gain network and the CFA.

Parameter names follow the diffusers convention the released checkpoint uses
(`to_q, to_k, to_v, to_out.0`, `ff.net.0.proj, ff.net.2`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


class Attention(nn.Module):
    """Multi-head attention of `query (N, Lq, C)` over `context (N, Lk, C)`; scale `head_dim ** -0.5`."""

    def __init__(self, dim: int, *, heads: int, head_dim: int):
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(dim, inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, dim), nn.Dropout(0.0))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """x `(N, Lq, C)`, context `(N, Lk, C)` (defaults to x) -> `(N, Lq, C)`."""
        context = x if context is None else context
        q, k, v = (
            rearrange(t, "n l (h d) -> n h l d", h=self.heads)
            for t in (self.to_q(x), self.to_k(context), self.to_v(context))
        )
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(rearrange(out, "n h l d -> n l (h d)"))


class GEGLU(nn.Module):
    """`value * gelu(gate)` with (value, gate) the two halves of one projection."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)


class FeedForward(nn.Module):
    """GEGLU MLP `dim -> 2 * (mult * dim) -> mult * dim -> dim` (names `net.0.proj`, `net.2`)."""

    def __init__(self, dim: int, *, mult: int = 4):
        super().__init__()
        self.net = nn.Sequential(GEGLU(dim, dim * mult), nn.Dropout(0.0), nn.Linear(dim * mult, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
