"""LPIPS (Zhang et al. 2018) with its ImageNet backbone resolved through `keep.weights`.

The `lpips` package ships its linear calibration weights but lets torchvision download the backbone
(AlexNet or VGG16) from download.pytorch.org. Here the backbone is built with random weights and then
filled from a local file found by `resolve_weights` (weights/, caches, torch hub cache, or a download
with checksum), so the source of every weight is explicit and offline runs fail with one clear
`WeightsUnavailable` message instead of a network traceback.

    net = build_lpips("alex", device="cpu")          # metric (benchmark): AlexNet, LPIPS v0.1
    d = net(out, gt)                                 # (N, 3, H, W) in [-1, 1] -> (N, 1, 1, 1)

The training loss may import `build_lpips("vgg", ...)` too; parameters are frozen, gradients still
flow to the inputs.
"""

from __future__ import annotations

import os
import warnings

import torch

from ..errors import KeepError
from ..weights import read_tensors, resolve_weights

# lpips network name -> registry name of its torchvision ImageNet backbone.
BACKBONES: dict[str, str] = {"alex": "alexnet", "vgg": "vgg16"}


def build_lpips(
    net: str = "alex",
    device: str | torch.device = "cpu",
    *,
    backbone_weights: str | os.PathLike | None = None,
) -> torch.nn.Module:
    """An `lpips.LPIPS` module (v0.1 linear weights) in eval mode with frozen parameters.

    net: "alex" (the usual metric) or "vgg" (the usual perceptual loss).
    backbone_weights: a local torchvision state dict for the backbone; default: the registry entry
        (`alexnet-owt-7be5be79.pth` / `vgg16-397923af.pth`) via `resolve_weights`.
    Raises `WeightsUnavailable` when the backbone file cannot be found or downloaded.
    Call: `module(x, y)` with x, y `(N, 3, H, W)` RGB in [-1, 1] -> `(N, 1, 1, 1)` distances.
    """
    if net not in BACKBONES:
        raise KeepError(f"unknown LPIPS network '{net}'; choose one of {sorted(BACKBONES)}")
    path = resolve_weights(backbone_weights if backbone_weights is not None else BACKBONES[net])
    state = read_tensors(path, "LPIPS backbone weights")  # before building the network: a bad file fails fast
    try:
        import lpips
    except ImportError as exc:  # pragma: no cover - lpips is a listed requirement
        raise KeepError(f"LPIPS needs the 'lpips' package ({exc}); pip install lpips") from None
    with warnings.catch_warnings():  # lpips passes torchvision's deprecated `pretrained=` argument
        warnings.simplefilter("ignore")
        module = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
    _load_backbone(module.net, state, path)
    module.eval().requires_grad_(False)
    return module.to(device)


def _load_backbone(backbone: torch.nn.Module, state: dict[str, torch.Tensor], path: os.PathLike) -> None:
    """Copy torchvision `features.<i>.*` tensors into lpips' slices, whose children are named `<i>`."""
    mapped = {}
    for name, _ in backbone.named_parameters():
        _slice, index, kind = name.split(".")  # e.g. slice2.3.weight <- features.3.weight
        key = f"features.{index}.{kind}"
        if key not in state:
            raise KeepError(f"LPIPS backbone file {path} has no '{key}': not a torchvision backbone state dict")
        mapped[name] = state[key]
    try:
        backbone.load_state_dict(mapped, strict=True)
    except RuntimeError as exc:
        raise KeepError(f"LPIPS backbone file {path} does not fit the network: {exc}") from None
