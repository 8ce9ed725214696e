"""Kalman gain network and update step: the paper's Kalman filter (Sec. 3; docs/network.md).

The gain `K[t]` in (0, 1) weighs, per latent position, the prediction (previous restored frame warped
into frame t and re-encoded) against the observation (the LQ encoder output of frame t):

    z_post[t] = (1 - K[t]) * z_obs[t] + K[t] * z_pred[t]                                    (Kalman update)

It is estimated from the observations alone: each frame's tokens attend to the first and the
previous frame of the window (sparse-causal attention), then each position attends across all frames
of the window (temporal attention), and a small conv head maps the result to one gain per position.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from .attention import Attention, FeedForward
from .blocks import ResBlock


class UncertaintyBlock(nn.Module):
    """Sparse-causal attention + GEGLU FF + temporal attention on tokens `(B*T, L, C)`."""

    def __init__(self, dim: int, *, heads: int, head_dim: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads=heads, head_dim=head_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, mult=4)
        self.norm_temp = nn.LayerNorm(dim)
        self.attn_temp = Attention(dim, heads=heads, head_dim=head_dim)

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        """x `(B*T, L, C)` -> `(B*T, L, C)`."""
        # a) sparse-causal attention: frame f attends to frames 0 and f-1 (frame 0: to itself twice).
        h = rearrange(self.norm1(x), "(b t) l c -> b t l c", t=num_frames)
        previous = torch.arange(num_frames, device=x.device).sub(1).clamp(min=0)
        context = torch.cat([h[:, :1].expand_as(h), h[:, previous]], dim=2)  # (B, T, 2L, C)
        x = x + self.attn1(rearrange(h, "b t l c -> (b t) l c"), rearrange(context, "b t l c -> (b t) l c"))
        # b) position-wise feed-forward
        x = x + self.ff(self.norm3(x))
        # c) temporal attention: each position attends to itself in every frame of the window.
        length = x.shape[1]
        x = rearrange(x, "(b t) l c -> (b l) t c", t=num_frames)
        x = x + self.attn_temp(self.norm_temp(x))
        return rearrange(x, "(b l) t c -> (b t) l c", l=length)


class KalmanGain(nn.Module):
    """Observations `(B, T, C, h, w)` -> gain `(B, T, 1, h, w)` in (0, 1)."""

    def __init__(
        self, dim: int, *, num_blocks: int, heads: int, head_dim: int, num_res_blocks: int = 3, norm_groups: int = 32
    ):
        super().__init__()
        self.uncertainty_blocks = nn.ModuleList(
            UncertaintyBlock(dim, heads=heads, head_dim=head_dim) for _ in range(num_blocks)
        )
        self.gain_head = nn.Sequential(
            *(ResBlock(dim, dim, norm_groups=norm_groups) for _ in range(num_res_blocks)),
            nn.Conv2d(dim, 1, 1),
            nn.Sigmoid(),
        )

    def forward(self, z_obs: torch.Tensor) -> torch.Tensor:
        batch, frames, _, height, _ = z_obs.shape
        x = rearrange(z_obs, "b t c h w -> (b t) (h w) c")
        for block in self.uncertainty_blocks:
            x = block(x, frames)
        x = rearrange(x, "(b t) (h w) c -> (b t) c h w", b=batch, h=height)
        return rearrange(self.gain_head(x), "(b t) 1 h w -> b t 1 h w", b=batch)


def kalman_update(z_obs: torch.Tensor, z_pred: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
    """Posterior `(1 - K) * z_obs + K * z_pred`; gain 0 returns the observation, 1 the prediction."""
    return (1 - gain) * z_obs + gain * z_pred
