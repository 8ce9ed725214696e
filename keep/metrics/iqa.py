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
- CLIP-IQA (Wang et al., AAAI 2023): pyiqa's `clipiqa` (what DOVE's evaluation script, by DVFace's first
  author, computes with `pyiqa.create_metric("clipiqa")`; not CLIP-IQA+, whose prompts are learned):
  OpenAI's CLIP RN50, pyiqa's five antonym prompt pairs ("Good image" / "bad image", "Sharp image" /
  "blurry image", ...), the softmax probability of the positive prompt averaged over the pairs, no
  positional embedding (any input size).
  OpenAI publishes RN50 only as a TorchScript archive (`RN50.pt`); its tensors are read by
  `keep.torchscript` without running its code and given to pyiqa's `build_model` (the network pyiqa's
  own `load` builds from the same archive after running it).
- LIQE (Zhang et al., CVPR 2023): pyiqa's `liqe` (KonIQ-10k weights, five quality-level prompts "a photo
  with {bad, poor, fair, good, perfect} quality", 15 of the 224 crops at stride 32, score = expected
  level 1-5). `liqe_koniq.pt` holds every weight of its fine-tuned CLIP ViT-B/32 (pyiqa loads it
  strictly over the OpenAI backbone), so OpenAI's ViT-B-32.pt is not needed. Frames smaller than 224 are
  upsampled (bicubic) to a 224 short side first; pyiqa refuses them.
Both need the `clip` tokenizer package (`openai-clip`, requirements-metrics.txt); equal to
`pyiqa.create_metric` with the same (random stand-in) weights (tests).
`build_iqa(name)` raises `KeepError` (one line: the file, the URL, where to put it) when a metric
cannot run; the evaluator turns that into an empty column and a note.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import vgg16

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
CLIP_METRICS = {"clipiqa": "clip_rn50", "liqe": "liqe_koniq"}  # metric -> the file that holds its weights
CLIP_DESCRIPTIONS = {
    "clipiqa": "CLIP-IQA (pyiqa `clipiqa`: OpenAI RN50 read from its TorchScript archive, 5 antonym prompt pairs)",
    "liqe": "LIQE, KonIQ-10k weights (pyiqa `liqe`: CLIP ViT-B/32, 15 crops of 224, levels 1-5)",
}


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


@contextlib.contextmanager
def _pyiqa_clip_backbone(clip: nn.Module) -> Iterator[None]:
    """While pyiqa builds CLIP-IQA or LIQE, its `load` (which would download OpenAI's TorchScript archive
    and run it with `torch.jit.load`) returns `clip`, and LIQE's prompt-feature cache goes to a temporary
    folder (pyiqa unpickles a cached file when it reads it back)."""
    import pyiqa.archs.clipiqa_arch as clipiqa_arch
    import pyiqa.archs.liqe_arch as liqe_arch

    saved = clipiqa_arch.load, liqe_arch.load, liqe_arch.DEFAULT_CACHE_DIR
    with tempfile.TemporaryDirectory() as cache, contextlib.redirect_stdout(io.StringIO()):
        clipiqa_arch.load = liqe_arch.load = lambda *args, **kwargs: clip
        liqe_arch.DEFAULT_CACHE_DIR = cache
        try:
            yield
        finally:
            clipiqa_arch.load, liqe_arch.load, liqe_arch.DEFAULT_CACHE_DIR = saved


class MinSide(nn.Module):
    """Upsamples (bicubic) images whose short side is below `size` before `net` (LIQE's 224 crops)."""

    def __init__(self, net: nn.Module, size: int):
        super().__init__()
        self.net, self.size = net, size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if min(x.shape[-2:]) < self.size:
            scale = self.size / min(x.shape[-2:])
            size = [max(self.size, round(side * scale)) for side in x.shape[-2:]]
            x = F.interpolate(x, size=size, mode="bicubic", align_corners=False).clamp(0, 1)
        return self.net(x)


def _build_clip_metric(name: str, device: str | torch.device) -> nn.Module:
    path = resolve_weights(CLIP_METRICS[name])
    try:
        from pyiqa.archs.clip_model import build_model
        from pyiqa.archs.clipiqa_arch import CLIPIQA
        from pyiqa.archs.liqe_arch import LIQE
    except ImportError as exc:
        raise KeepError(
            f"{name} needs the optional 'pyiqa' and 'openai-clip' packages ({exc}); pip install --no-deps "
            "pyiqa==0.1.16 -r requirements-metrics.txt"
        ) from None
    state = _state(path, f"{name} weights")
    backbone = {k.removeprefix("clip_model."): v for k, v in state.items()}
    try:
        clip = build_model(dict(backbone)).float()  # pyiqa's build rounds to fp16 (OpenAI's files are fp16)
        if name == "liqe":  # LIQE's fine-tuned fp32 weights, before pyiqa computes its prompt features
            clip.load_state_dict(backbone, strict=True)
        with _pyiqa_clip_backbone(clip):
            net = CLIPIQA(model_type="clipiqa", backbone="RN50") if name == "clipiqa" else LIQE(pretrained=False)
    except (KeyError, RuntimeError, AssertionError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise KeepError(f"{name} weights {path} do not fit pyiqa's CLIP network: {reason:.300}") from None
    net = net.eval().requires_grad_(False).to(device)
    return MinSide(net, 224) if name == "liqe" else net


def build_iqa(name: str, *, device: str | torch.device = "cpu") -> tuple[nn.Module, str]:
    """(metric module, what it is) for `dists`, `clipiqa`, `musiq`, `niqe`, `maniqa`, `liqe`; KeepError when
    it cannot run."""
    if name == "dists":
        vgg = _state(resolve_weights("vgg16", path_option=""), "VGG16 weights")
        net = DISTS(vgg, _state(resolve_weights("dists"), "DISTS weights"))
        return net.eval().requires_grad_(False).to(device), "DISTS (VGG16 + learned alpha/beta), RGB in [0, 1]"
    if name in PYIQA_METRICS:
        return _build_pyiqa(name, device), PYIQA_METRICS[name][2]
    if name in CLIP_METRICS:
        return _build_clip_metric(name, device), CLIP_DESCRIPTIONS[name]
    raise KeepError(f"unknown image quality metric '{name}'")
