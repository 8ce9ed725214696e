"""RRDBNet: the ESRGAN generator, as in Real-ESRGAN's x2plus background upsampler (docs/inference.md, `--bg_upsampler`).

    feat = conv_first(pixel_unshuffle(x))          x2: the input is unshuffled by 2 (3 -> 12 channels)
    feat = feat + conv_body(RRDB_23(...RRDB_1(feat)))
    feat = lrelu(conv_up1(nearest x2)) ; feat = lrelu(conv_up2(nearest x2))
    out  = conv_last(lrelu(conv_hr(feat)))         (B, 3, H * scale, W * scale)

A residual dense block (RDB) is five 3x3 convolutions, each fed the concatenation of the block input
and all earlier outputs (growth `num_grow` channels each), the last one back to `num_feat` channels,
added to the input scaled by 0.2; an RRDB is three RDBs, again added with a 0.2 residual scale. The
parameter names are those of the released `RealESRGAN_x2plus.pth` (`conv_first`, `body.N.rdbK.convJ`,
`conv_body`, `conv_up1`, `conv_up2`, `conv_hr`, `conv_last`; weights under `params_ema`), so it loads
strictly. Written from the ESRGAN / Real-ESRGAN papers and the checkpoint's key layout.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2)


class ResidualDenseBlock(nn.Module):
    def __init__(self, num_feat: int = 64, num_grow: int = 32):
        super().__init__()
        for i in range(1, 5):
            setattr(self, f"conv{i}", nn.Conv2d(num_feat + (i - 1) * num_grow, num_grow, 3, padding=1))
        self.conv5 = nn.Conv2d(num_feat + 4 * num_grow, num_feat, 3, padding=1)
        for i in range(1, 6):  # small initial residuals, as ESRGAN (kaiming x 0.1): a deep stack stays stable
            conv = getattr(self, f"conv{i}")
            nn.init.kaiming_normal_(conv.weight)
            conv.weight.data.mul_(0.1)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`(B, num_feat, H, W)` -> same shape."""
        features = [x]
        for i in range(1, 5):
            features.append(_lrelu(getattr(self, f"conv{i}")(torch.cat(features, dim=1))))
        return x + 0.2 * self.conv5(torch.cat(features, dim=1))


class RRDB(nn.Module):
    def __init__(self, num_feat: int = 64, num_grow: int = 32):
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.2 * self.rdb3(self.rdb2(self.rdb1(x)))


class RRDBNet(nn.Module):
    """Image `(B, 3, H, W)` in [0, 1] -> `(B, 3, H * scale, W * scale)` (raw; clamp to view).

    scale 2 (x2plus) needs H and W even; scale 1 needs multiples of 4 (pixel-unshuffled inputs).
    """

    def __init__(
        self,
        *,
        in_channels: int = 3,
        out_channels: int = 3,
        scale: int = 2,
        num_feat: int = 64,
        num_block: int = 23,
        num_grow: int = 32,
    ):
        super().__init__()
        if scale not in (1, 2, 4):
            raise ValueError(f"RRDBNet scale must be 1, 2 or 4, got {scale}")
        self.scale = scale
        self.unshuffle = {1: 4, 2: 2, 4: 1}[scale]  # the trunk always upsamples x4
        self.conv_first = nn.Conv2d(in_channels * self.unshuffle**2, num_feat, 3, padding=1)
        self.body = nn.Sequential(*(RRDB(num_feat, num_grow) for _ in range(num_block)))
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, padding=1)
        self.conv_up1 = nn.Conv2d(num_feat, num_feat, 3, padding=1)
        self.conv_up2 = nn.Conv2d(num_feat, num_feat, 3, padding=1)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, padding=1)
        self.conv_last = nn.Conv2d(num_feat, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.unshuffle > 1:
            x = F.pixel_unshuffle(x, self.unshuffle)  # (B, 3 * u^2, H / u, W / u)
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        feat = _lrelu(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")))
        feat = _lrelu(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")))
        return self.conv_last(_lrelu(self.conv_hr(feat)))
