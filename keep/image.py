"""The one place images are read, written and converted: a second copy of a conversion would drift apart.

Conventions used across the project:
- arrays: uint8 RGB, channels last: one image `(H, W, 3)`, a clip `(T, H, W, 3)`;
- tensors: float in [-1, 1], channels first: `(3, H, W)`, `(T, 3, H, W)`, ... (the network's range).

    x = to_tensor(frames)          # (T, H, W, 3) uint8 -> (T, 3, H, W) float in [-1, 1]
    frames = to_uint8(out)         # (..., 3, H, W) raw network output -> (..., H, W, 3) uint8 (clamped)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from einops import rearrange

from .errors import KeepError
from .paths import write_atomically

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def is_image(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly inside `folder`, sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and is_image(p))


def to_rgb(img: np.ndarray) -> np.ndarray:
    """Grayscale `(H, W)` / `(H, W, 1)`, RGB or RGBA uint8 -> contiguous `(H, W, 3)` uint8 RGB."""
    if img.ndim == 2:
        img = img[:, :, None]
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    return np.ascontiguousarray(img[:, :, :3])


def read_image(path: str | Path) -> np.ndarray:
    """Any image OpenCV reads (8 or 16 bit, gray, RGB, RGBA) -> `(H, W, 3)` uint8 RGB."""
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise KeepError(f"cannot read image {path}")
    if img.dtype == np.uint16:
        img = (img // 257).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise KeepError(f"unsupported image type {img.dtype} in {path}")
    if img.ndim == 3 and img.shape[2] in (3, 4):
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA if img.shape[2] == 4 else cv2.COLOR_BGR2RGB)
    return to_rgb(img)


def write_image(path: str | Path, rgb: np.ndarray) -> None:
    """`(H, W, 3)` uint8 RGB -> file (format from the suffix), written whole or not at all
    (`keep.paths.write_atomically`: KeepError naming the file if it cannot be written)."""
    import cv2

    try:
        encoded, data = cv2.imencode(Path(path).suffix, np.ascontiguousarray(rgb[..., ::-1]))
    except cv2.error:
        encoded = False
    if not encoded:
        raise KeepError(f"cannot write image {path}")
    write_atomically(path, data.tobytes(), fsync=False)


def to_tensor(img: np.ndarray, device: str | torch.device | None = None) -> torch.Tensor:
    """uint8 `(..., H, W, 3)` -> float32 `(..., 3, H, W)` in [-1, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(img))
    if device is not None:
        x = x.to(device)  # move the uint8 data: 4x fewer bytes than the float tensor
    return rearrange(x, "... h w c -> ... c h w").float().div_(127.5).sub_(1.0)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """`(..., 3, H, W)` in [-1, 1] (raw network output: clamped first) -> uint8 `(..., H, W, 3)`."""
    x = (x.detach().float().clamp(-1, 1) + 1.0).mul_(127.5).round_().to(torch.uint8)
    return np.ascontiguousarray(rearrange(x, "... c h w -> ... h w c").cpu().numpy())
