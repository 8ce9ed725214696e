"""Backward warping with optical flow (the Kalman prediction step, docs/network.md)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def flow_warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample `image` at `p + flow(p)`.

    image `(N, C, H, W)`; flow `(N, 2, H, W)` in pixels, channel 0 = x (columns), 1 = y (rows), from
    the target frame to `image`'s frame. Bilinear, pixel-centre grid with corners aligned, zeros
    outside. Returns `(N, C, H, W)`; a zero flow returns `image` unchanged.
    """
    n, _, height, width = image.shape
    ys, xs = torch.meshgrid(
        torch.arange(height, device=flow.device, dtype=flow.dtype),
        torch.arange(width, device=flow.device, dtype=flow.dtype),
        indexing="ij",
    )
    x = xs + flow[:, 0]
    y = ys + flow[:, 1]
    # align_corners=True: -1 and 1 are the centres of the first and last pixels.
    grid = torch.stack((2.0 * x / max(width - 1, 1) - 1.0, 2.0 * y / max(height - 1, 1) - 1.0), dim=-1)
    return F.grid_sample(image, grid.to(image.dtype), mode="bilinear", padding_mode="zeros", align_corners=True)
