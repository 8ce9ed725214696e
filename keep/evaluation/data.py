"""Reading test sets: `root/GT/<clip>/*.png` with `root/LQ/<clip>/*.png` (same file names)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..errors import KeepError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


@dataclass
class Clip:
    name: str
    frame_names: list[str]
    gt: np.ndarray  # (T, H, W, 3) uint8 RGB
    lq: np.ndarray  # (T, H/4, W/4, 3) uint8 RGB


def frame_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def read_rgb(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise KeepError(f"cannot read image {path}")
    return np.ascontiguousarray(img[..., ::-1])


def write_rgb(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), np.ascontiguousarray(img[..., ::-1])):
        raise KeepError(f"cannot write image {path}")


def list_clips(root: str | Path, names: tuple[str, ...] = ()) -> list[str]:
    gt_root = Path(root) / "GT"
    if not gt_root.is_dir():
        raise KeepError(f"test set {root}: no GT/ folder (expected {gt_root}/<clip>/*.png)")
    available = sorted(p.name for p in gt_root.iterdir() if p.is_dir())
    if not available:
        raise KeepError(f"test set {root}: GT/ holds no clip folders")
    missing = [n for n in names if n not in available]
    if missing:
        raise KeepError(f"test set {root}: no clip {missing[0]!r} (clips: {', '.join(available[:10])}...)")
    return list(names) if names else available


def load_clip(root: str | Path, name: str, *, max_frames: int = 0) -> Clip:
    """Read one clip; LQ must exist for every GT frame and be GT / 4 in size."""
    root = Path(root)
    gt_files = frame_files(root / "GT" / name)
    if max_frames > 0:
        gt_files = gt_files[:max_frames]
    if not gt_files:
        raise KeepError(f"clip {name}: no frames in {root / 'GT' / name}")
    lq_dir = root / "LQ" / name
    if not lq_dir.is_dir():
        raise KeepError(
            f"clip {name}: no LQ frames ({lq_dir} missing); synthesise them once with "
            f"`python scripts/make_test_set.py --root {root}`"
        )
    lq_files = [lq_dir / p.name for p in gt_files]
    absent = [p for p in lq_files if not p.is_file()]
    if absent:
        raise KeepError(f"clip {name}: LQ frame {absent[0]} missing")
    gt, lq = _stack([read_rgb(p) for p in gt_files], name), _stack([read_rgb(p) for p in lq_files], name)
    height, width = gt.shape[1:3]
    if lq.shape[1:3] != (height // 4, width // 4):
        raise KeepError(
            f"clip {name}: LQ frames are {lq.shape[2]}x{lq.shape[1]}, expected GT/4 = {width // 4}x{height // 4}"
        )
    return Clip(name=name, frame_names=[p.stem for p in gt_files], gt=gt, lq=lq)


def _stack(frames: list[np.ndarray], name: str) -> np.ndarray:
    sizes = sorted({f.shape for f in frames})
    if len(sizes) > 1:
        raise KeepError(f"clip {name}: frames of different sizes {sizes[:3]}")
    return np.stack(frames)
