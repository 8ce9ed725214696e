"""Code-prediction transformer (CodeFormer style; docs/network.md).

Predicts, for each of the `h * w` latent tokens, logits over the codebook. Position embeddings are
added to queries and keys only, in every layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


class TransformerLayer(nn.Module):
    """Pre-norm self-attention + GELU MLP (names `self_attn, linear1, linear2, norm1, norm2`)."""

    def __init__(self, dim: int, *, heads: int, mlp_dim: int):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=0.0, batch_first=True)
        self.linear1 = nn.Linear(dim, mlp_dim)
        self.linear2 = nn.Linear(mlp_dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """x `(N, L, dim)`, pos `(1, L, dim)` -> `(N, L, dim)`."""
        h = self.norm1(x)
        qk = h + pos
        x = x + self.self_attn(qk, qk, h, need_weights=False)[0]
        return x + self.linear2(F.gelu(self.linear1(self.norm2(x))))


class CodeTransformer(nn.Module):
    """Latent `(N, emb_dim, h, w)` -> codebook logits `(N, h*w, codebook_size)` (tokens row-major)."""

    def __init__(
        self,
        *,
        emb_dim: int,
        dim: int,
        heads: int,
        layers: int,
        num_tokens: int,
        codebook_size: int,
    ):
        super().__init__()
        self.position_emb = nn.Parameter(torch.zeros(num_tokens, dim))
        self.feat_emb = nn.Linear(emb_dim, dim)
        self.layers = nn.ModuleList(TransformerLayer(dim, heads=heads, mlp_dim=2 * dim) for _ in range(layers))
        self.head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, codebook_size, bias=False))
        nn.init.normal_(self.position_emb, std=0.02)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.feat_emb(rearrange(z, "n c h w -> n (h w) c"))
        pos = self.position_emb[None]
        for layer in self.layers:
            x = layer(x, pos)
        return self.head(x)
