"""LPIPS perceptual loss with its backbone weights resolved through `keep.weights` (no silent download).

The `lpips` package ships its linear calibration layers; its VGG / AlexNet backbone comes from
torchvision's download URL. Here that file is a registry entry (`vgg16`, `alexnet`) found locally or
downloaded by `resolve_weights`; offline without it, building the loss raises `WeightsUnavailable`
with the file name, URL and where to put it.
"""

from __future__ import annotations

import torch
from torch import nn

from ..weights import WeightFile, register, resolve_weights

BACKBONES: dict[str, WeightFile] = {
    "vgg": WeightFile(
        filename="vgg16-397923af.pth",
        url="https://download.pytorch.org/models/vgg16-397923af.pth",
        sha256="397923af",
        licence="BSD-3-Clause (torchvision)",
        description="torchvision VGG16 ImageNet backbone for the LPIPS loss",
    ),
    "alex": WeightFile(
        filename="alexnet-owt-7be5be79.pth",
        url="https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
        sha256="7be5be79",
        licence="BSD-3-Clause (torchvision)",
        description="torchvision AlexNet ImageNet backbone for the LPIPS loss",
    ),
}
for _net, _entry in BACKBONES.items():
    register({"vgg": "vgg16", "alex": "alexnet"}[_net], _entry)


class LPIPSLoss(nn.Module):
    """images `(N, 3, H, W)` in [-1, 1] -> mean LPIPS distance (frozen network)."""

    def __init__(self, *, net: str = "vgg"):
        super().__init__()
        import lpips

        if net not in BACKBONES:
            raise ValueError(f"unknown LPIPS backbone '{net}'; choose one of {list(BACKBONES)}")
        path = resolve_weights({"vgg": "vgg16", "alex": "alexnet"}[net])  # raises WeightsUnavailable
        self.lpips = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
        backbone = torch.load(path, map_location="cpu", weights_only=True)
        # lpips' slices keep torchvision's `features.<i>` indices: slice<k>.<i>.<param>
        state = {k: backbone[f"features.{k.split('.', 1)[1]}"] for k in self.lpips.net.state_dict()}
        self.lpips.net.load_state_dict(state)
        self.lpips.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> LPIPSLoss:
        return super().train(False)  # always frozen, always eval

    def forward(self, out: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        return self.lpips(out.float(), gt.float()).mean()
