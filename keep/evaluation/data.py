"""Reading test sets: `root/GT/<clip>/*.png` with `root/LQ/<clip>/*.png` (same file names); sets of real
footage without ground truth (`data.gt: false`): `root/LQ/<clip>/*.png` only."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import KeepError
from ..image import list_images, read_image


@dataclass
class Clip:
    name: str
    frame_names: list[str]
    gt: np.ndarray | None  # (T, H, W, 3) uint8 RGB; None for real footage without ground truth
    lq: np.ndarray  # (T, H/4, W/4, 3) uint8 RGB


def list_clips(root: str | Path, names: tuple[str, ...] = (), *, folder: str = "GT") -> list[str]:
    """Clip names under `root/<folder>/` (GT; LQ for a set without ground truth)."""
    gt_root = Path(root) / folder
    if not gt_root.is_dir():
        raise KeepError(f"test set {root}: no {folder}/ folder (expected {gt_root}/<clip>/*.png)")
    available = sorted(p.name for p in gt_root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not available:
        raise KeepError(f"test set {root}: {folder}/ holds no clip folders")
    missing = [n for n in names if n not in available]
    if missing:
        raise KeepError(f"test set {root}: no clip {missing[0]!r} (clips: {', '.join(available[:10])}...)")
    return list(names) if names else available


def lq_without_gt(root: str | Path) -> list[str]:
    """The clips of `root/LQ/` that have no `root/GT/` folder: nothing to score them against."""
    lq_root, gt_root = Path(root) / "LQ", Path(root) / "GT"
    if not lq_root.is_dir():
        return []
    return sorted(
        p.name
        for p in lq_root.iterdir()
        if p.is_dir() and not p.name.startswith(".") and not (gt_root / p.name).is_dir()
    )


def clip_files(root: str | Path, name: str, *, max_frames: int = 0) -> tuple[list[Path], list[Path]]:
    """The GT and LQ frame files of a clip, checked without decoding them all: frames exist, LQ has
    every GT file name, and the first LQ frame is the first GT frame / 4 in size."""
    root = Path(root)
    gt_files = list_images(root / "GT" / name)
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
    _check_sizes(name, read_image(gt_files[0]).shape, read_image(lq_files[0]).shape)
    return gt_files, lq_files


def load_clip(root: str | Path, name: str, *, max_frames: int = 0) -> Clip:
    """Read one clip; LQ must exist for every GT frame and be GT / 4 in size."""
    gt_files, lq_files = clip_files(root, name, max_frames=max_frames)
    gt, lq = _stack([read_image(p) for p in gt_files], name), _stack([read_image(p) for p in lq_files], name)
    _check_sizes(name, gt.shape[1:], lq.shape[1:])
    return Clip(name=name, frame_names=[p.stem for p in gt_files], gt=gt, lq=lq)


def load_lq_clip(root: str | Path, name: str, *, max_frames: int = 0) -> Clip:
    """Read one clip of a set without ground truth: `root/LQ/<clip>/*.png`, square frames of one size."""
    files = list_images(Path(root) / "LQ" / name)
    files = files[:max_frames] if max_frames > 0 else files
    if not files:
        raise KeepError(f"clip {name}: no frames in {Path(root) / 'LQ' / name}")
    lq = _stack([read_image(p) for p in files], name)
    if lq.shape[1] != lq.shape[2]:
        raise KeepError(f"clip {name}: LQ frames are {lq.shape[2]}x{lq.shape[1]}; aligned faces are square")
    return Clip(name=name, frame_names=[p.stem for p in files], gt=None, lq=lq)


def _check_sizes(name: str, gt_shape: tuple[int, ...], lq_shape: tuple[int, ...]) -> None:
    height, width = gt_shape[:2]
    if tuple(lq_shape[:2]) != (height // 4, width // 4):
        raise KeepError(
            f"clip {name}: LQ frames are {lq_shape[1]}x{lq_shape[0]}, expected GT/4 = {width // 4}x{height // 4}"
        )


def _stack(frames: list[np.ndarray], name: str) -> np.ndarray:
    sizes = sorted({f.shape for f in frames})
    if len(sizes) > 1:
        raise KeepError(f"clip {name}: frames of different sizes {sizes[:3]}")
    return np.stack(frames)
