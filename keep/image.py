"""The one place images are read, written and converted: a second copy of a conversion would drift apart.

Conventions used across the project:
- arrays: uint8 RGB, channels last: one image `(H, W, 3)`, a clip `(T, H, W, 3)`;
- tensors: float in [-1, 1], channels first: `(3, H, W)`, `(T, 3, H, W)`, ... (the network's range).

    x = to_tensor(frames)          # (T, H, W, 3) uint8 -> (T, 3, H, W) float in [-1, 1]
    frames = to_uint8(out)         # (..., 3, H, W) raw network output -> (..., H, W, 3) uint8 (clamped)
"""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
import torch
from einops import rearrange
from PIL import Image, ImageOps

from .errors import KeepError
from .paths import write_atomically

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def is_image(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly inside `folder`, sorted by name; hidden ones (`.name`: a Mac's `._0001.png`
    resource forks, say) are not images."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and is_image(p) and not p.name.startswith("."))


def to_rgb(img: np.ndarray) -> np.ndarray:
    """Grayscale `(H, W)` / `(H, W, 1)`, RGB or RGBA uint8 -> contiguous `(H, W, 3)` uint8 RGB."""
    if img.ndim == 2:
        img = img[:, :, None]
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    return np.ascontiguousarray(img[:, :, :3])


# EXIF orientation (tag 0x0112, 1..8) -> how `orient` turns the stored pixels upright: (quarter turns
# counter-clockwise, then a left-right mirror). Cameras and phones store a photo as the sensor saw it and
# record how to show it in this tag, as phone videos carry a display matrix (`keep.video.io`).
EXIF_ORIENTATIONS = {
    1: (0, False), 2: (0, True), 3: (2, False), 4: (2, True), 5: (3, True), 6: (3, False), 7: (1, True), 8: (1, False)
}  # fmt: skip


def orient(rgb: np.ndarray, turns: int, mirror: bool, *, contiguous: bool = True) -> np.ndarray:
    """Stored pixels `(H, W, ...)` (a frame or one plane) turned `turns` quarter turns counter-clockwise, then
    mirrored left-right when `mirror`: a video's display matrix or a photo's EXIF orientation applied.
    Contiguous, or a view with `contiguous=False`."""
    if turns:
        rgb = np.rot90(rgb, turns)
    if mirror:
        rgb = rgb[:, ::-1]
    return np.ascontiguousarray(rgb) if contiguous else rgb


def exif_orientation(path: str | Path) -> int:
    """A photo's EXIF orientation, 1..8 (1: stored upright; also when the file has none or cannot be parsed).
    Only the file's header is read (Pillow); JPEG, PNG (an `eXIf` chunk before the pixels), WebP and TIFF."""
    try:
        with warnings.catch_warnings(), Image.open(path) as img:
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # only the header is read
            if img.format == "PNG":  # Pillow's PNG `getexif` decodes every pixel to look for a later chunk
                exif = Image.Exif()
                exif.load(img.info.get("exif", b""))
            else:
                exif = img.getexif()
            value = exif.get(0x0112, 1)
    except Exception:  # noqa: BLE001 - any header Pillow cannot parse: the pixels are taken as stored
        return 1
    return value if value in EXIF_ORIENTATIONS else 1


def read_upright(path: str | Path) -> tuple[np.ndarray, int]:
    """Any image OpenCV reads (8 or 16 bit, gray, RGB, RGBA) -> `(H, W, 3)` uint8 RGB, upright: turned by its
    EXIF orientation, which is returned too (1: it was stored upright).

    OpenCV applies the orientation itself for some formats and flags only (`IMREAD_COLOR` does for JPEG, PNG
    and WebP in OpenCV 5.1, `IMREAD_UNCHANGED` never), so those are read as stored and turned here. TIFF is
    the exception: libtiff turns the pixels as it decodes them (OpenCV's reader for orientations 2-4, failing
    on 5-8), so a TIFF with an orientation other than 1 is decoded by Pillow, which hands it over upright."""
    orientation = exif_orientation(path)
    if orientation != 1 and Path(path).suffix.lower() in (".tif", ".tiff"):
        img, turn = _read_tiff_upright(path), (0, False)
    else:
        img, turn = cv2.imread(str(path), cv2.IMREAD_UNCHANGED), EXIF_ORIENTATIONS[orientation]  # as stored
        if img is None:
            raise KeepError(f"cannot read image {path}")
        if img.ndim == 3 and img.shape[2] in (3, 4):
            img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA if img.shape[2] == 4 else cv2.COLOR_BGR2RGB)
    if img.dtype == np.uint16:
        img = (img // 257).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise KeepError(f"unsupported image type {img.dtype} in {path}")
    return orient(to_rgb(img), *turn), orientation


def _read_tiff_upright(path: str | Path) -> np.ndarray:
    """A TIFF's pixels upright (RGB(A) or gray, uint8 or uint16), through Pillow: recent versions turn it while
    decoding and drop the tag, older ones leave that to `exif_transpose`, which is then a no-op for the others."""
    try:
        with Image.open(path) as img:
            upright = ImageOps.exif_transpose(img)
            if upright.mode.startswith("I;16"):
                return np.asarray(upright).astype(np.uint16)
            return np.asarray(upright.convert("RGBA" if "A" in upright.mode else "RGB"))
    except Exception as exc:  # noqa: BLE001 - any decoding failure is the file's
        raise KeepError(f"cannot read image {path}: {exc}") from None


def read_image(path: str | Path) -> np.ndarray:
    """Any image OpenCV reads -> `(H, W, 3)` uint8 RGB, upright (`read_upright`)."""
    return read_upright(path)[0]


def write_image(path: str | Path, rgb: np.ndarray) -> None:
    """`(H, W, 3)` uint8 RGB -> file (format from the suffix), written whole or not at all
    (`keep.paths.write_atomically`: KeepError naming the file if it cannot be written)."""
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
