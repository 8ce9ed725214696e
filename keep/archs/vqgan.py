"""VQGAN encoder, decoder and codebook (docs/network.md, "VQGAN encoder, codebook and decoder").

The encoder and decoder are flat `blocks` lists, as in the released checkpoint. Which block outputs
feed the CFT ("taps", encoder side) and which decoder outputs are fused ("fusion points") follows one
rule that reproduces the released indices for the released configuration:

- encoder tap of a level: output of its last ResBlock (before that ResBlock's attention, if any);
  released: {512: 2, 256: 5, 128: 8, 64: 11, 32: 14, 16: 18};
- decoder fusion point of a level: output of its first ResBlock, or of its last ResBlock at levels
  with attention; released: {16: 6, 32: 9, 64: 12, 128: 15, 256: 18, 512: 21}.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .blocks import AttnBlock, Downsample, ResBlock, Upsample, group_norm


class Encoder(nn.Module):
    """Image `(N, 3, S, S)` in [-1, 1] -> latent `(N, emb_dim, S / 2**(L-1), ...)` plus tap features."""

    def __init__(
        self,
        *,
        img_size: int,
        nf: int,
        ch_mult: tuple[int, ...],
        num_res_blocks: int,
        attn_resolutions: tuple[int, ...],
        emb_dim: int,
        norm_groups: int = 32,
    ):
        super().__init__()
        blocks: list[nn.Module] = [nn.Conv2d(3, nf, 3, padding=1)]
        self.tap_index: dict[int, int] = {}  # resolution -> index of the block whose output is tapped
        resolution = img_size
        in_mults = (1,) + tuple(ch_mult)
        for level, mult in enumerate(ch_mult):
            ch_in, ch_out = nf * in_mults[level], nf * mult
            for _ in range(num_res_blocks):
                blocks.append(ResBlock(ch_in, ch_out, norm_groups=norm_groups))
                self.tap_index[resolution] = len(blocks) - 1
                ch_in = ch_out
                if resolution in attn_resolutions:
                    blocks.append(AttnBlock(ch_in, norm_groups=norm_groups))
            if level != len(ch_mult) - 1:
                blocks.append(Downsample(ch_in))
                resolution //= 2
        blocks += [
            ResBlock(ch_in, ch_in, norm_groups=norm_groups),
            AttnBlock(ch_in, norm_groups=norm_groups),
            ResBlock(ch_in, ch_in, norm_groups=norm_groups),
            group_norm(ch_in, norm_groups),  # note: no swish between norm and conv (released)
        ]
        blocks.append(nn.Conv2d(ch_in, emb_dim, 3, padding=1))
        self.blocks = nn.ModuleList(blocks)
        self.latent_size = resolution

    def forward(self, x: torch.Tensor, taps: tuple[int, ...] = ()) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """x `(N, 3, S, S)` -> (latent `(N, emb_dim, s, s)`, {resolution: feature `(N, C_r, r, r)`})."""
        wanted = {self.tap_index[r]: r for r in taps}
        features: dict[int, torch.Tensor] = {}
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in wanted:
                features[wanted[i]] = x
        return x, features


class Decoder(nn.Module):
    """Quantized latent `(N, emb_dim, s, s)` -> image `(N, 3, S, S)` (raw, roughly in [-1, 1]).

    The decoder is run block by block by the owner (KEEP) so that CFT and CFA can act at the fusion
    points; `forward` is the plain VQGAN decoder.
    """

    def __init__(
        self,
        *,
        img_size: int,
        nf: int,
        ch_mult: tuple[int, ...],
        num_res_blocks: int,
        attn_resolutions: tuple[int, ...],
        emb_dim: int,
        norm_groups: int = 32,
    ):
        super().__init__()
        ch_in = nf * ch_mult[-1]
        resolution = img_size // 2 ** (len(ch_mult) - 1)
        blocks: list[nn.Module] = [
            nn.Conv2d(emb_dim, ch_in, 3, padding=1),
            ResBlock(ch_in, ch_in, norm_groups=norm_groups),
            AttnBlock(ch_in, norm_groups=norm_groups),
            ResBlock(ch_in, ch_in, norm_groups=norm_groups),
        ]
        self.fuse_index: dict[int, int] = {}  # resolution -> index of the block whose output is fused
        self.channels: dict[int, int] = {}
        for level, mult in enumerate(reversed(ch_mult)):
            ch_out = nf * mult
            for r in range(num_res_blocks):
                blocks.append(ResBlock(ch_in, ch_out, norm_groups=norm_groups))
                if r == 0 or resolution in attn_resolutions:
                    self.fuse_index[resolution] = len(blocks) - 1
                ch_in = ch_out
                if resolution in attn_resolutions:
                    blocks.append(AttnBlock(ch_in, norm_groups=norm_groups))
            self.channels[resolution] = ch_in
            if level != len(ch_mult) - 1:
                blocks.append(Upsample(ch_in))
                resolution *= 2
        blocks.append(group_norm(ch_in, norm_groups))  # note: no swish between norm and conv (released)
        blocks.append(nn.Conv2d(ch_in, 3, 3, padding=1))
        self.blocks = nn.ModuleList(blocks)

    def forward(self, z_q: torch.Tensor) -> torch.Tensor:
        x = z_q
        for block in self.blocks:
            x = block(x)
        return x


class VectorQuantizer(nn.Module):
    """Codebook of `codebook_size` vectors of `emb_dim` values (taming-transformers style).

    `forward(z)` quantises continuous latents to their nearest code (squared L2) and returns
    `(z_q, idx, loss)` with a straight-through gradient and the VQ-VAE codebook + commitment loss.
    """

    def __init__(self, *, codebook_size: int, emb_dim: int, beta: float = 0.25):
        super().__init__()
        self.codebook_size = codebook_size
        self.emb_dim = emb_dim
        self.beta = beta
        self.embedding = nn.Embedding(codebook_size, emb_dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / codebook_size, 1.0 / codebook_size)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """z `(N, C, h, w)` -> (z_q `(N, C, h, w)`, idx `(N, h*w)` row-major, scalar loss)."""
        height = z.shape[-2]
        flat = rearrange(z, "n c h w -> (n h w) c")
        codes = self.embedding.weight
        dist = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ codes.t() + codes.pow(2).sum(1)[None]
        idx = dist.argmin(dim=1)
        # F.embedding, not codes[idx]: the backward of advanced indexing (index_put_ with accumulate) adds
        # rows from several CPU threads in a varying order, so two runs differed from step 3 (docs/training.md);
        # embedding's backward sums each row in a fixed order. Same values forward.
        z_q = rearrange(F.embedding(idx, codes), "(n h w) c -> n c h w", n=z.shape[0], h=height)
        loss = F.mse_loss(z_q, z.detach()) + self.beta * F.mse_loss(z_q.detach(), z)
        z_q = z + (z_q - z).detach()  # straight-through estimator
        return z_q, idx.view(z.shape[0], -1), loss

    def lookup(self, idx: torch.Tensor, height: int) -> torch.Tensor:
        """idx `(N, h*w)` row-major -> codebook rows `(N, emb_dim, h, w)`."""
        return rearrange(self.embedding(idx), "n (h w) c -> n c h w", h=height)
