"""DOVER video quality (Wu et al., "Exploring Video Quality Assessment on User Generated Contents from
Aesthetic and Technical Perspectives", ICCV 2023): our own network, reading the released `DOVER.pth`
(or `DOVER_plus_plus.pth`, same layout) weights-only, key for key (tests/data/dover_keys.txt).

- Technical branch (Sec. 3.2, FAST-VQA's fragments): a Video Swin-T (patch 2x4x4, 96 channels, depths
  2-2-6-2, heads 3-6-12-24, windows 8x7x7) whose attention bias is gated by fragment: between tokens of
  the same 32x32 fragment it takes `fragment_position_bias_table`, otherwise the relative-position table
  (in the first three stages; the gate is the L1 distance of the two tokens' fragment cells, as the
  reference code computes it). Input: 3 clips of 32 frames (every 2nd frame, one clip per third of the
  video), each frame a 7x7 grid of 32x32 patches taken at the same place for 32 frames.
- Aesthetic branch (Sec. 3.3): ConvNeXt-T inflated to 3D (stem 2x4x4; depth-wise kernels 1/3/1 frames
  deep in turn), on 32 frames (one per 32nd of the video) resized to 224x224.
- Heads: 1x1x1 convolutions 768 -> 64 -> GELU -> 1 at every position; a branch's score is the mean.
- Fusion (the reference code's `evaluate_a_set_of_videos.py`, the "overall" score in [0, 1] DVFace's
  table reports): t = (technical - 0.1107) / 0.07355, a = (aesthetic + 0.08285) / 0.03774,
  overall = sigmoid(0.6104 t + 0.3896 a).
Frames are RGB, normalised by ImageNet's mean / std on the 0-255 scale. The reference samples frame
offsets and patch positions at random on every call; here they come from a `numpy.random.Generator`
(same distributions, reproducible). Equal to the reference code with the same weights and draws
(docs/benchmark.md, a one-off check).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms.functional import resize

from ..errors import KeepError
from ..weights import read_tensors

WINDOW = (8, 7, 7)
MEAN = (123.675, 116.28, 103.53)
STD = (58.395, 57.12, 57.375)


def _window_and_shift(size, window, shift):
    """Window and shift clipped to the feature size: a dimension no larger than the window is one window, unshifted."""
    clipped = tuple(min(s, w) for s, w in zip(size, window, strict=True))
    return clipped, tuple(0 if s <= w else h for s, w, h in zip(size, window, shift, strict=True))


def _partition(x: torch.Tensor, window) -> torch.Tensor:
    """(B, D, H, W, C) -> (B * windows, window volume, C)."""
    b, d, h, w, c = x.shape
    x = x.view(b, d // window[0], window[0], h // window[1], window[1], w // window[2], window[2], c)
    return x.permute(0, 1, 3, 5, 2, 4, 6, 7).reshape(-1, window[0] * window[1] * window[2], c)


def _reverse(windows: torch.Tensor, window, b: int, d: int, h: int, w: int) -> torch.Tensor:
    x = windows.view(b, d // window[0], h // window[1], w // window[2], *window, -1)
    return x.permute(0, 1, 4, 2, 5, 3, 6, 7).reshape(b, d, h, w, -1)


@lru_cache(maxsize=64)
def _shift_mask(d: int, h: int, w: int, window, shift, device: torch.device) -> torch.Tensor:
    """-100 between tokens that the cyclic shift brought together from different regions (Swin)."""
    regions = torch.zeros((1, d, h, w, 1), device=device)
    count = 0
    for ds in (slice(-window[0]), slice(-window[0], -shift[0]), slice(-shift[0], None)):
        for hs in (slice(-window[1]), slice(-window[1], -shift[1]), slice(-shift[1], None)):
            for ws in (slice(-window[2]), slice(-window[2], -shift[2]), slice(-shift[2], None)):
                regions[:, ds, hs, ws, :] = count
                count += 1
    ids = _partition(regions, window).squeeze(-1)
    mask = ids.unsqueeze(1) - ids.unsqueeze(2)
    return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)


@lru_cache(maxsize=64)
def _fragment_gate(d: int, h: int, w: int, window, shift, device: torch.device) -> torch.Tensor:
    """(windows, N, N): L1 distance between the fragment cells of two tokens of a window, the feature map
    cut into a window[1] x window[2] grid of cells (nearest-neighbour), shifted with the tokens."""
    cells = torch.stack(torch.meshgrid(*(torch.arange(n) for n in (1, window[1], window[2])), indexing="ij"))
    coords = F.interpolate(cells[None].float().to(device), size=(d, h, w)).long().permute(0, 2, 3, 4, 1)
    coords = torch.roll(coords, shifts=tuple(-s for s in shift), dims=(1, 2, 3))
    per_window = _partition(coords, window)
    return (per_window[:, None, :] - per_window[:, :, None]).abs().sum(-1)


class WindowAttention3D(nn.Module):
    def __init__(self, dim: int, heads: int, fragment_bias: bool):
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        table = (2 * WINDOW[0] - 1) * (2 * WINDOW[1] - 1) * (2 * WINDOW[2] - 1)
        self.relative_position_bias_table = nn.Parameter(torch.zeros(table, heads))
        if fragment_bias:
            self.fragment_position_bias_table = nn.Parameter(torch.zeros(table, heads))
        coords = torch.stack(torch.meshgrid(*(torch.arange(n) for n in WINDOW), indexing="ij")).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + torch.tensor(WINDOW) - 1
        index = (
            rel[..., 0] * (2 * WINDOW[1] - 1) * (2 * WINDOW[2] - 1) + rel[..., 1] * (2 * WINDOW[2] - 1) + rel[..., 2]
        )
        self.register_buffer("relative_position_index", index)
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, gate: torch.Tensor) -> torch.Tensor:
        b_, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b_, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        index = self.relative_position_index[:n, :n].reshape(-1)  # a clipped window: the table's first N (as DOVER)
        bias = self.relative_position_bias_table[index].reshape(n, n, -1).permute(2, 0, 1).unsqueeze(0)
        gate = gate.unsqueeze(1)
        if hasattr(self, "fragment_position_bias_table"):
            fragment = self.fragment_position_bias_table[index].reshape(n, n, -1).permute(2, 0, 1)
            bias = bias * gate + fragment * (1 - gate)
        windows = gate.shape[0]
        attn = attn.view(b_ // windows, windows, self.heads, n, n) + bias.unsqueeze(0)
        if mask is not None:
            attn = attn + mask.unsqueeze(1).unsqueeze(0)
        attn = attn.view(-1, self.heads, n, n).softmax(-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b_, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class SwinBlock3D(nn.Module):
    def __init__(self, dim: int, heads: int, shift, fragment_bias: bool):
        super().__init__()
        self.shift = shift
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = WindowAttention3D(dim, heads, fragment_bias)
        self.mlp = Mlp(dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, d, h, w, _ = x.shape
        window, shift = _window_and_shift((d, h, w), WINDOW, self.shift)
        y = self.norm1(x)
        pads = [(n - s % n) % n for s, n in zip((d, h, w), window, strict=True)]
        y = F.pad(y, (0, 0, 0, pads[2], 0, pads[1], 0, pads[0]))
        _, dp, hp, wp, _ = y.shape
        shifted = any(s > 0 for s in shift)
        if shifted:
            y = torch.roll(y, shifts=tuple(-s for s in shift), dims=(1, 2, 3))
        gate = _fragment_gate(dp, hp, wp, window, shift, y.device)
        y = self.attn(_partition(y, window), mask if shifted else None, gate)
        y = _reverse(y.view(-1, *window, y.shape[-1]), window, b, dp, hp, wp)
        if shifted:
            y = torch.roll(y, shifts=shift, dims=(1, 2, 3))
        x = x + y[:, :d, :h, :w].contiguous()
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.reduction, self.norm = nn.Linear(4 * dim, 2 * dim, bias=False), nn.LayerNorm(4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, h, w, _ = x.shape
        x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        x = torch.cat([x[:, :, 0::2, 0::2], x[:, :, 1::2, 0::2], x[:, :, 0::2, 1::2], x[:, :, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x))


class SwinStage(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, fragment_bias: bool, downsample: bool):
        super().__init__()
        half = tuple(n // 2 for n in WINDOW)
        self.blocks = nn.ModuleList(
            SwinBlock3D(dim, heads, (0, 0, 0) if i % 2 == 0 else half, fragment_bias) for i in range(depth)
        )
        self.downsample = PatchMerging(dim) if downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, d, h, w = x.shape
        window, shift = _window_and_shift((d, h, w), WINDOW, tuple(n // 2 for n in WINDOW))
        padded = [-(-s // n) * n for s, n in zip((d, h, w), window, strict=True)]
        mask = _shift_mask(*padded, window, shift, x.device)
        x = x.permute(0, 2, 3, 4, 1)
        for block in self.blocks:
            x = block(x, mask)
        if self.downsample is not None:
            x = self.downsample(x)
        return x.permute(0, 4, 1, 2, 3)


class PatchEmbed3D(nn.Module):
    def __init__(self, dim: int = 96, patch=(2, 4, 4)):
        super().__init__()
        self.patch = patch
        self.proj, self.norm = nn.Conv3d(3, dim, patch, stride=patch), nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d, h, w = x.shape[2:]
        p = self.patch
        x = F.pad(x, (0, (p[2] - w % p[2]) % p[2], 0, (p[1] - h % p[1]) % p[1], 0, (p[0] - d % p[0]) % p[0]))
        x = self.proj(x)
        return self.norm(x.permute(0, 2, 3, 4, 1)).permute(0, 4, 1, 2, 3)


class FragmentSwin3D(nn.Module):
    """DOVER's technical backbone (FAST-VQA's Swin-T with fragment-gated biases): (B, 3, T, H, W) ->
    (B, 768, T/2, H/32, W/32)."""

    def __init__(self, depths=(2, 2, 6, 2), heads=(3, 6, 12, 24), fragment_bias=(True, True, True, False)):
        super().__init__()
        self.patch_embed = PatchEmbed3D(96)
        self.layers = nn.ModuleList(
            SwinStage(96 * 2**i, depths[i], heads[i], fragment_bias[i], i < len(depths) - 1) for i in range(len(depths))
        )
        self.norm = nn.LayerNorm(96 * 2 ** (len(depths) - 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x.contiguous())
        return self.norm(x.permute(0, 2, 3, 4, 1)).permute(0, 4, 1, 2, 3)


class ChannelsFirstLayerNorm(nn.Module):
    """LayerNorm over dim 1 of (B, C, T, H, W), computed as ConvNeXt's reference code does."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight, self.bias, self.eps = nn.Parameter(torch.ones(dim)), nn.Parameter(torch.zeros(dim)), eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt((x - mean).pow(2).mean(1, keepdim=True) + self.eps)
        return self.weight[:, None, None, None] * x + self.bias[:, None, None, None]


class ConvNeXtBlock3D(nn.Module):
    def __init__(self, dim: int, frames: int):
        super().__init__()
        self.dwconv = nn.Conv3d(dim, dim, (frames, 7, 7), padding=(frames // 2, 3, 3), groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1, self.pwconv2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.dwconv(x).permute(0, 2, 3, 4, 1))
        y = self.gamma * self.pwconv2(F.gelu(self.pwconv1(y)))
        return x + y.permute(0, 4, 1, 2, 3)


class ConvNeXt3D(nn.Module):
    """DOVER's aesthetic backbone, ConvNeXt-T inflated to 3D: (B, 3, T, H, W) -> (B, 768, T/2, H/32, W/32)."""

    def __init__(self, depths=(3, 3, 9, 3), dims=(96, 192, 384, 768), inflate="131"):
        super().__init__()
        stem = nn.Sequential(nn.Conv3d(3, dims[0], (2, 4, 4), stride=(2, 4, 4)), ChannelsFirstLayerNorm(dims[0]))
        downs = [
            nn.Sequential(ChannelsFirstLayerNorm(dims[i]), nn.Conv3d(dims[i], dims[i + 1], (1, 2, 2), stride=(1, 2, 2)))
            for i in range(3)
        ]
        self.downsample_layers = nn.ModuleList([stem, *downs])
        self.stages = nn.ModuleList(
            nn.Sequential(*(ConvNeXtBlock3D(dims[i], int(inflate[j % len(inflate)])) for j in range(depths[i])))
            for i in range(4)
        )
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for down, stage in zip(self.downsample_layers, self.stages, strict=True):
            x = stage(down(x))
        return self.norm(x.permute(0, 2, 3, 4, 1)).permute(0, 4, 1, 2, 3)


class QualityHead(nn.Module):
    """1x1x1 convolutions 768 -> 64 -> GELU -> 1: a quality score at every position."""

    def __init__(self, channels: int = 768, hidden: int = 64):
        super().__init__()
        self.fc_hid, self.fc_last = nn.Conv3d(channels, hidden, 1), nn.Conv3d(hidden, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc_last(F.gelu(self.fc_hid(x)))


class DOVER(nn.Module):
    """`net(aesthetic, technical)` -> (aesthetic score, technical score): each branch's head averaged over
    its positions and clips (the raw scores `fuse` combines)."""

    def __init__(self):
        super().__init__()
        self.technical_backbone, self.aesthetic_backbone = FragmentSwin3D(), ConvNeXt3D()
        self.technical_head, self.aesthetic_head = QualityHead(), QualityHead()

    def forward(self, aesthetic: torch.Tensor, technical: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.aesthetic_head(self.aesthetic_backbone(aesthetic)).mean()
        t = self.technical_head(self.technical_backbone(technical)).mean()
        return a, t


def fuse(aesthetic: float, technical: float) -> float:
    """The overall score in [0, 1] (module docstring)."""
    t, a = (technical - 0.1107) / 0.07355, (aesthetic + 0.08285) / 0.03774
    return float(1 / (1 + np.exp(-(0.6104 * t + 0.3896 * a))))


# ----------------------------------------------------------------------------------------------- views
def frame_indices(num_frames: int, clip_len: int, segments: int, interval: int, rng: np.random.Generator) -> np.ndarray:
    """`segments` runs of `clip_len` frames `interval` apart, one per equal part of the video, each at a
    random offset inside its part (at its start when the part is too short), wrapped modulo the length."""
    grids = np.array([num_frames // segments * i for i in range(segments)])
    span = num_frames // segments
    if span > clip_len * interval:
        offsets = rng.integers(0, span - clip_len * interval, size=segments)
    else:
        offsets = np.zeros(segments, dtype=np.int64)
    runs = np.arange(clip_len)[None, :] * interval + offsets[:, None] + grids[:, None]
    return np.mod(runs.reshape(-1), num_frames)


def fragments(video: torch.Tensor, rng: np.random.Generator, grid: int = 7, size: int = 32, aligned: int = 32):
    """(3, T, H, W) uint8 -> (3, T, grid*size, grid*size) float: a `size` patch from each cell of a grid x grid
    split of the frame, at a random place inside the cell, the same for `aligned` frames in a row. A
    frame smaller than grid*size is upsampled first (bilinear, back to uint8); the cells then follow the
    frame's size before upsampling, as the reference code does."""
    frames, height, width = video.shape[-3:]
    if min(height, width) < grid * size:
        ratio = min(height, width) / (grid * size)
        video = (F.interpolate(video / 255.0, scale_factor=1 / ratio, mode="bilinear") * 255.0).to(video.dtype)
    cell_h, cell_w = height // grid, width // grid
    starts_h = [min(cell_h * i, height - size) for i in range(grid)]
    starts_w = [min(cell_w * i, width - size) for i in range(grid)]
    blocks = frames // aligned
    rnd_h = (
        rng.integers(0, cell_h - size, (grid, grid, blocks)) if cell_h > size else np.zeros((grid, grid, blocks), int)
    )
    rnd_w = (
        rng.integers(0, cell_w - size, (grid, grid, blocks)) if cell_w > size else np.zeros((grid, grid, blocks), int)
    )
    out = torch.zeros(video.shape[0], frames, grid * size, grid * size)
    for i, hs in enumerate(starts_h):
        for j, ws in enumerate(starts_w):
            for t in range(blocks):
                top, left = hs + int(rnd_h[i, j, t]), ws + int(rnd_w[i, j, t])
                out[:, t * aligned : (t + 1) * aligned, i * size : (i + 1) * size, j * size : (j + 1) * size] = video[
                    :, t * aligned : (t + 1) * aligned, top : top + size, left : left + size
                ]
    return out


def _normalise(view: torch.Tensor, clips: int) -> torch.Tensor:
    """(3, clips*T, H, W) on the 0-255 scale -> (clips, 3, T, H, W), ImageNet-normalised."""
    mean, std = torch.tensor(MEAN).view(3, 1, 1, 1), torch.tensor(STD).view(3, 1, 1, 1)
    view = (view.float() - mean) / std
    c, t, h, w = view.shape
    return view.reshape(c, clips, t // clips, h, w).transpose(0, 1)


def sample_views(frames: np.ndarray, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A clip `(T, H, W, 3)` uint8 RGB -> (aesthetic view (1, 3, 32, 224, 224), technical view
    (3, 3, 32, 224, 224)), drawn in the reference code's order: technical frames, aesthetic frames,
    technical patch positions."""
    technical_idx = frame_indices(len(frames), 32, 3, 2, rng)
    aesthetic_idx = frame_indices(len(frames), 1, 32, 2, rng)
    video = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2)  # (3, T, H, W)
    technical = fragments(video[:, technical_idx], rng)
    aesthetic = resize(video[:, aesthetic_idx].transpose(0, 1), [224, 224], antialias=True).transpose(0, 1)
    return _normalise(aesthetic, 1), _normalise(technical, 3)


def load_dover(path, *, device: str | torch.device = "cpu") -> DOVER:
    """DOVER with the weights of a released checkpoint (a plain state dict, read weights-only)."""
    state = read_tensors(path, "DOVER weights")
    if not isinstance(state, dict):
        raise KeepError(f"DOVER weights {path}: not a state dict")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    net = DOVER()
    expected = net.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    misshapen = sorted(k for k in set(expected) & set(state) if tuple(state[k].shape) != tuple(expected[k].shape))
    if missing or unexpected or misshapen:
        problems = [
            f"{len(v)} {what} (first: {v[0]})"
            for what, v in (
                ("missing keys", missing),
                ("unexpected keys", unexpected),
                ("keys of another shape", misshapen),
            )
            if v
        ]
        raise KeepError(f"DOVER weights {path} do not fit DOVER's network: {'; '.join(problems)}")
    net.load_state_dict(state, strict=True)
    return net.eval().requires_grad_(False).to(device)


@torch.no_grad()
def dover_score(frames: np.ndarray, net: DOVER, rng: np.random.Generator, *, device="cpu") -> float:
    """DOVER's overall score in [0, 1] of a clip `(T, H, W, 3)` uint8 RGB (higher is better)."""
    aesthetic, technical = sample_views(frames, rng)
    a, t = net(aesthetic.to(device), technical.to(device))
    return fuse(float(a), float(t))
