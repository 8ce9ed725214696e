"""Background (and face) upsamplers for `--upscale`: bicubic, or Real-ESRGAN x2plus.

    upsampler = build_upsampler("realesrgan", device="cuda", tile=400)
    big = upsampler(rgb, 2)          # (H, W, 3) uint8 -> (2H, 2W, 3) uint8

`realesrgan` is this project's `RRDBNet` with the released `RealESRGAN_x2plus.pth` (registry name
`realesrgan_x2plus`), what the authors' KEEP release, CodeFormer and GFPGAN use for the background.
It runs in half precision on a GPU and, with `tile > 0`, on tiles of `tile` x `tile` input pixels,
each seen with `tile_pad` pixels of context on every side that are cut away afterwards (bounded memory
for 4K frames; the output equals the untiled one up to the context the network sees beyond the pad,
tested). Other output scales than x2 resample the x2 result (Lanczos up, area down). Without its
weights it falls back to bicubic and says why in one log line.
"""

from __future__ import annotations

import logging
import math
from typing import Protocol

import cv2
import numpy as np
import torch

from .archs.rrdbnet import RRDBNet
from .errors import KeepError, WeightsUnavailable
from .weights import resolve_weights

log = logging.getLogger(__name__)

UPSAMPLERS = ("bicubic", "realesrgan")


class Upsampler(Protocol):
    name: str

    def __call__(self, rgb: np.ndarray, scale: float) -> np.ndarray: ...


def resize(rgb: np.ndarray, scale: float) -> np.ndarray:
    """`(H, W, 3)` -> `(round(H * scale), round(W * scale), 3)` with OpenCV's bicubic (the default background)."""
    height, width = rgb.shape[:2]
    return cv2.resize(rgb, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_CUBIC)


class BicubicUpsampler:
    name = "bicubic"

    def __call__(self, rgb: np.ndarray, scale: float) -> np.ndarray:
        return rgb.copy() if scale == 1 else resize(rgb, scale)


class RealESRGANUpsampler:
    """An `RRDBNet` applied to uint8 RGB images, whole or in tiles (see the module docstring)."""

    def __init__(
        self,
        network: RRDBNet,
        *,
        device: str | torch.device = "cpu",
        tile: int = 0,
        tile_pad: int = 10,
        border: int = 10,
        half: bool | None = None,
        name: str = "realesrgan_x2plus",
    ):
        if tile < 0 or tile_pad < 0 or border < 0:
            raise KeepError(f"--bg_tile must be >= 0 (0: no tiles), got {tile}")
        self.device = torch.device(device)
        self.half = self.device.type == "cuda" if half is None else half
        self.network = network.to(self.device).eval()
        if self.half:
            self.network.half()
        self.scale = network.scale
        unit = network.unshuffle  # pixel-unshuffle needs sizes and offsets that are multiples of it
        self.tile = math.ceil(tile / unit) * unit
        self.tile_pad = math.ceil(tile_pad / unit) * unit
        self.border = border  # reflected pixels around the image, cut away after (no zero-padding artefacts)
        self.unit = unit
        self.name = name

    @torch.no_grad()
    def upsample(self, x: torch.Tensor) -> torch.Tensor:
        """`(1, 3, H, W)` float in [0, 1] -> `(1, 3, H * scale, W * scale)` float in [0, 1]."""
        height, width = x.shape[-2:]
        pad_bottom = self.border + (-(height + 2 * self.border)) % self.unit
        pad_right = self.border + (-(width + 2 * self.border)) % self.unit
        mode = "reflect" if min(height, width) > max(self.border, pad_bottom, pad_right) else "replicate"
        x = torch.nn.functional.pad(x, (self.border, pad_right, self.border, pad_bottom), mode=mode)
        x = x.to(self.device, torch.float16 if self.half else torch.float32)
        out = self._tiled(x) if self.tile and max(x.shape[-2:]) > self.tile else self.network(x)
        s, b = self.scale, self.border
        return out[..., b * s : (b + height) * s, b * s : (b + width) * s].float().clamp_(0, 1)

    def _tiled(self, x: torch.Tensor) -> torch.Tensor:
        """The network on `tile`-sized pieces, each with `tile_pad` pixels of context, stitched."""
        _, channels, height, width = x.shape
        s, pad = self.scale, self.tile_pad
        out = x.new_zeros((1, channels, height * s, width * s))
        for top in range(0, height, self.tile):
            for left in range(0, width, self.tile):
                bottom, right = min(top + self.tile, height), min(left + self.tile, width)
                y0, x0 = max(top - pad, 0), max(left - pad, 0)
                y1, x1 = min(bottom + pad, height), min(right + pad, width)
                piece = self.network(x[..., y0:y1, x0:x1])  # (1, 3, (y1 - y0) s, (x1 - x0) s)
                oy, ox = (top - y0) * s, (left - x0) * s
                out[..., top * s : bottom * s, left * s : right * s] = piece[
                    ..., oy : oy + (bottom - top) * s, ox : ox + (right - left) * s
                ]
        return out

    def __call__(self, rgb: np.ndarray, scale: float) -> np.ndarray:
        """`(H, W, 3)` uint8 -> `(round(H * scale), round(W * scale), 3)` uint8."""
        x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float().div_(255.0)
        out = self.upsample(x)[0].mul_(255.0).round_().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        height, width = rgb.shape[:2]
        size = (round(width * scale), round(height * scale))
        if size != (out.shape[1], out.shape[0]):
            larger = size[0] > out.shape[1]
            out = cv2.resize(out, size, interpolation=cv2.INTER_LANCZOS4 if larger else cv2.INTER_AREA)
        return np.ascontiguousarray(out)


def load_rrdbnet(source: str = "realesrgan_x2plus", *, scale: int = 2) -> RRDBNet:
    """RRDBNet with weights from a registry name or path (state dict under `params_ema`, `params` or bare)."""
    path = resolve_weights(source)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise KeepError(f"cannot read {path}: {type(exc).__name__}: {exc}") from None
    state = obj.get("params_ema", obj.get("params", obj)) if isinstance(obj, dict) else obj
    network = RRDBNet(scale=scale)
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise KeepError(f"{path} is not a Real-ESRGAN x{scale} RRDBNet: {str(exc).splitlines()[0]}") from None
    return network


def build_upsampler(
    name: str = "bicubic", *, device: str | torch.device = "cpu", tile: int = 0, tile_pad: int = 10
) -> Upsampler:
    """Upsampler by name (`bicubic`, `realesrgan`); `realesrgan` without its weights -> bicubic, logged."""
    if name == "bicubic":
        return BicubicUpsampler()
    if name != "realesrgan":
        raise KeepError(f"unknown upsampler '{name}'; choose one of: {', '.join(UPSAMPLERS)}")
    try:
        network = load_rrdbnet("realesrgan_x2plus")
    except WeightsUnavailable as exc:
        log.warning("realesrgan unavailable (%s); upsampling with bicubic instead", str(exc).split(". ")[0])
        return BicubicUpsampler()
    return RealESRGANUpsampler(network, device=device, tile=tile, tile_pad=tile_pad)


__all__ = ["UPSAMPLERS", "BicubicUpsampler", "RealESRGANUpsampler", "build_upsampler", "load_rrdbnet", "resize"]
