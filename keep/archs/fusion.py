"""Feature fusion inside the decoder: CFT (controllable feature transformation, from CodeFormer) and
CFA (cross-frame attention, paper section 3).

Initialisation: the released code zero-initialises every weight of these layers, so their weight
gradients are zero forever. Here only the last affine map of each residual
branch starts at zero: each layer is the identity at initialisation, its last maps receive gradients
from the first step and the rest from the second step on (tests/test_network.py shows both).
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from .attention import Attention, FeedForward
from .blocks import ResBlock


class CFT(nn.Module):
    """Controllable feature transformation: `dec + fidelity * (dec * scale + shift)`.

    `scale` and `shift` are predicted from the (detached) encoder tap and the decoder feature, both
    `(N, C, r, r)`; `fidelity` (CodeFormer's `w`) trades fidelity to the LQ input (up to 1) for quality (0).
    """

    def __init__(self, channels: int, *, norm_groups: int = 32):
        super().__init__()
        self.encode_enc = ResBlock(2 * channels, channels, norm_groups=norm_groups)

        def branch() -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(channels, channels, 3, padding=1),
                nn.LeakyReLU(0.2, inplace=True),
                nn.Conv2d(channels, channels, 3, padding=1),
            )

        self.scale = branch()
        self.shift = branch()
        for last in (self.scale[2], self.shift[2]):
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)

    def forward(self, enc: torch.Tensor, dec: torch.Tensor, fidelity: float = 1.0) -> torch.Tensor:
        feat = self.encode_enc(torch.cat([enc, dec], dim=1))
        return dec + fidelity * (dec * self.scale(feat) + self.shift(feat))


class CFA(nn.Module):
    """Cross-frame attention: tokens of frame t attend to the previous frame's CFA output.

    Post-norm residual branches: `x = LN1(Attn(x_t, prev)) + x_t`, `x = LN2(GEGLU_FF(x)) + x`.
    """

    def __init__(self, channels: int, *, heads: int, head_dim: int):
        super().__init__()
        self.attn = Attention(channels, heads=heads, head_dim=head_dim)
        self.ff = FeedForward(channels, mult=4)
        self.norm1 = nn.LayerNorm(channels)
        self.norm2 = nn.LayerNorm(channels)
        # The post-norm's affine is the last map of each branch: zero gain -> identity at start.
        nn.init.zeros_(self.norm1.weight)
        nn.init.zeros_(self.norm2.weight)

    def forward(self, feat: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        """feat, prev `(N, C, r, r)` -> `(N, C, r, r)`."""
        height = feat.shape[-2]
        x = rearrange(feat, "n c h w -> n (h w) c")
        context = rearrange(prev, "n c h w -> n (h w) c")
        x = self.norm1(self.attn(x, context)) + x
        x = self.norm2(self.ff(x)) + x
        return rearrange(x, "n (h w) c -> n c h w", h=height)
