"""LPIPS perceptual loss. The network comes from `keep.metrics.lpips.build_lpips`, which fills the
torchvision backbone (VGG16 / AlexNet) from a file resolved through `keep.weights` (registry names
`vgg16`, `alexnet`): no silent download; offline without the file, building the loss raises
`WeightsUnavailable` naming the file, its URL and where to put it.
"""

from __future__ import annotations

import torch
from torch import nn

from ..metrics.lpips import build_lpips


class LPIPSLoss(nn.Module):
    """images `(N, 3, H, W)` in [-1, 1] -> mean LPIPS distance. Frozen; gradients reach the inputs."""

    def __init__(self, *, net: str = "vgg"):
        super().__init__()

        self.lpips = build_lpips(net)

    def train(self, mode: bool = True) -> LPIPSLoss:
        return super().train(False)  # always frozen, always eval (lpips' dropout stays off)

    def forward(self, out: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        return self.lpips(out.float(), gt.float()).mean()
