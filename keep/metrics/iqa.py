"""Image quality metrics of today's face-video tables (DVFace Tables 1-2): DISTS (full reference) and
the no-reference CLIP-IQA, MUSIQ, NIQE, MANIQA, LIQE, each `(N, 3, H, W)` RGB in [0, 1] -> `(N,)`.

- DISTS (Ding et al., "Image Quality Assessment: Unifying Structure and Texture Similarity", TPAMI 2020,
  Eqs. 6-9): our own module. VGG16 (torchvision's ImageNet weights, registry `vgg16`) with its max
  pools replaced by L2 pooling (a 3x3 Hann window, stride 2), the image itself as stage 0; per channel
  of each stage the texture term (2 mu_x mu_y + c) / (mu_x^2 + mu_y^2 + c) and the structure term
  (2 s_xy + c) / (s_x^2 + s_y^2 + c), c = 1e-6, weighted by the learned alpha / beta (normalised to sum
  to 1; `DISTS_weights-f5e65c96.pth`, registry `dists`); DISTS = 1 - the weighted sum. Equal to
  `pyiqa`'s `dists` with the same weights (tests/test_today_metrics.py).
- MUSIQ (Ke et al., ICCV 2021; KonIQ-10k weights), NIQE (Mittal et al., IEEE SPL 2013; pyiqa's
  parameters), MANIQA (Yang et al., CVPRW 2022; KonIQ-10k weights): the networks of `pyiqa` 0.1.16
  (`IQA-PyTorch`, the reference implementation these tables use: DVFace's group evaluates with
  `pyiqa.create_metric`), built without any download and filled from the local file that
  `keep.weights` resolves, read weights only (pyiqa's own loader unpickles anything). Same options
  as `pyiqa.create_metric(name)`; equal to it with the same weights (tests).
- CLIP-IQA (Wang et al., AAAI 2023) and LIQE (Zhang et al., CVPR 2023) need OpenAI's CLIP backbone,
  which OpenAI publishes only as TorchScript archives (RN50.pt, ViT-B-32.pt); this project does not load
  TorchScript (loading it runs code), so these two columns stay empty with that note (registered in
  `keep.weights` with their URLs and checksums for when a state-dict copy is at hand).
`build_iqa(name)` raises `KeepError` (one line: the file, the URL, where to put it) when a metric
cannot run; the evaluator turns that into an empty column and a note.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import KeepError
from ..weights import read_tensors, resolve_weights

STAGE_CHANNELS = (3, 64, 128, 256, 512, 512)
VGG_STAGES = ((0, 4), (5, 9), (10, 16), (17, 23), (24, 30))  # torchvision vgg16.features slices, pools dropped


class L2Pool(nn.Module):
    """sqrt(Hann-weighted mean of x^2), 3x3 window, stride 2 (DISTS's replacement for max pooling)."""

    def __init__(self, channels: int):
        super().__init__()
        window = torch.from_numpy(np.hanning(5)[1:-1]).float()
        kernel = window[:, None] * window[None, :]
        self.register_buffer("kernel", (kernel / kernel.sum()).expand(channels, 1, 3, 3).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (F.conv2d(x * x, self.kernel, stride=2, padding=1, groups=x.shape[1]) + 1e-12).sqrt()


class DISTS(nn.Module):
    """`dists(out, ref)`: `(N, 3, H, W)` RGB in [0, 1] each -> `(N,)` distances (module docstring)."""

    def __init__(self, vgg_state: dict[str, torch.Tensor], dists_state: dict[str, torch.Tensor]):
        super().__init__()
        from torchvision.models import vgg16

        features = vgg16(weights=None).features
        features.load_state_dict({k.removeprefix("features."): v for k, v in vgg_state.items() if "features." in k})
        stages = [nn.Sequential(*features[0:4])]
        for (start, stop), channels in zip(VGG_STAGES[1:], STAGE_CHANNELS[1:5], strict=True):
            stages.append(nn.Sequential(L2Pool(channels), *features[start:stop]))
        self.stages = nn.ModuleList(stages)
        alpha, beta = (dists_state[k].reshape(-1).float() for k in ("alpha", "beta"))
        total = alpha.sum() + beta.sum()
        self.register_buffer("alpha", alpha / total)
        self.register_buffer("beta", beta / total)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats, h = [x], (x - self.mean) / self.std
        for stage in self.stages:
            h = stage(h)
            feats.append(h)
        return feats

    def forward(self, out: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        c = 1e-6
        texture, structure = [], []
        for fx, fy in zip(self._features(out), self._features(ref), strict=True):
            mx, my = fx.mean((2, 3)), fy.mean((2, 3))
            vx, vy = fx.var((2, 3), unbiased=False), fy.var((2, 3), unbiased=False)
            cov = (fx * fy).mean((2, 3)) - mx * my
            texture.append((2 * mx * my + c) / (mx**2 + my**2 + c))
            structure.append((2 * cov + c) / (vx + vy + c))
        return 1 - (torch.cat(texture, 1) @ self.alpha + torch.cat(structure, 1) @ self.beta)


# name -> (pyiqa metric options, registry name of its weights, what the column reports)
PYIQA_METRICS: dict[str, tuple[dict, str, str]] = {
    "musiq": ({"type": "MUSIQ", "pretrained": "koniq10k"}, "musiq_koniq", "MUSIQ, KonIQ-10k weights (pyiqa `musiq`)"),
    "niqe": ({"type": "NIQE", "test_y_channel": True}, "niqe_params", "NIQE on luma (pyiqa `niqe`)"),
    "maniqa": (
        {"type": "MANIQA", "train_dataset": "koniq", "scale": 0.8},
        "maniqa_koniq",
        "MANIQA, KonIQ-10k weights, 20 uniform 224 crops (pyiqa `maniqa`)",
    ),
}
CLIP_METRICS = {"clipiqa": "clip_rn50", "liqe": "clip_vit_b32"}  # metric -> its CLIP backbone (registry)


@contextlib.contextmanager
def _no_pretrained_backbones() -> Iterator[None]:
    """While pyiqa builds a network, timm builds its backbones without downloading ImageNet weights:
    MANIQA's checkpoint holds every weight of the network, ViT included."""
    import timm

    create = timm.create_model
    timm.create_model = lambda *args, **kwargs: create(*args, **{**kwargs, "pretrained": False})
    try:
        yield
    finally:
        timm.create_model = create


def _state(path, what: str) -> dict[str, torch.Tensor]:
    state = read_tensors(path, what)
    if isinstance(state, dict) and isinstance(state.get("params"), dict):
        state = state["params"]
    if not isinstance(state, dict):
        raise KeepError(f"{what} {path}: not a state dict")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _build_pyiqa(name: str, device: str | torch.device) -> nn.Module:
    options, weights, _ = PYIQA_METRICS[name]
    path = resolve_weights(weights)
    try:
        from pyiqa.archs import build_network
    except ImportError as exc:
        raise KeepError(
            f"{name} needs the optional 'pyiqa' package ({exc}); pip install --no-deps pyiqa==0.1.16 "
            "-r requirements-metrics.txt"
        ) from None
    if name == "niqe":  # parameters from a MATLAB .mat file (numbers only, read by scipy)
        return build_network({**options, "pretrained_model_path": str(path)}).eval().to(device)
    state = _state(path, f"{name} weights")
    with _no_pretrained_backbones():
        net = build_network({**options, "pretrained": False})
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise KeepError(f"{name} weights {path} do not fit pyiqa's network: {str(exc).splitlines()[0]}") from None
    return net.eval().requires_grad_(False).to(device)


def build_iqa(name: str, *, device: str | torch.device = "cpu") -> tuple[nn.Module, str]:
    """(metric module, what it is) for `dists`, `musiq`, `niqe`, `maniqa`; KeepError when it cannot run."""
    if name == "dists":
        vgg = _state(resolve_weights("vgg16", path_option=""), "VGG16 weights")
        net = DISTS(vgg, _state(resolve_weights("dists"), "DISTS weights"))
        return net.eval().requires_grad_(False).to(device), "DISTS (VGG16 + learned alpha/beta), RGB in [0, 1]"
    if name in PYIQA_METRICS:
        return _build_pyiqa(name, device), PYIQA_METRICS[name][2]
    if name in CLIP_METRICS:
        from ..weights import REGISTRY

        entry = REGISTRY[CLIP_METRICS[name]]
        raise KeepError(
            f"{name} needs OpenAI's CLIP backbone ({entry.filename}, {entry.url}), published only as a "
            "TorchScript archive, which this project does not load (loading TorchScript runs code)"
        )
    raise KeepError(f"unknown image quality metric '{name}'")
