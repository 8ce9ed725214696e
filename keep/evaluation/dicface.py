"""DicFace's VFHQ-Test release -> the aligned clips `test.py` reads (`root/GT/<clip>/*.png`, `root/LQ/...`).

The layout, as DicFace's public code reads it (`basicsr/data/vfhq_dataset.py`, `scripts/warp_images.py`):

    <gt>/<clip>/*.png          GT frames of each clip (512 x 512, not aligned), sorted by name
    <landmarks>/<clip>.txt     one line per frame: 10 numbers, the 5 points x1 y1 ... x5 y5 (eyes, nose
                               tip, mouth corners) in the GT frame's pixels; line i belongs to frame i
    vfhq_test.txt              the 50 test clips, one line each: `<clip path>/<number of frames>`
    <lq>/<clip>/*.png          (when the release has them) LQ frames of the same names, any size

Each GT frame is warped onto the FFHQ 5-point template at 512 by the similarity transform of its
landmarks (`cv2.estimateAffinePartial2D`, LMEDS), bilinear, outside the frame DicFace's grey
(BGR 135, 133, 132): DicFace's `FaceAligner.align_warp_face`. An LQ frame is warped with the landmarks
and the template scaled by its size / the GT's, as DicFace aligns its LQ; one at GT size is then
reduced to GT / 4 (area) for `test.py`, whose methods upsample LQ themselves. Without LQ frames,
`scripts/make_test_set.py --protocol dicface` synthesises them from the aligned GT with DicFace's
released degradation options (docs/benchmark.md).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np

from ..errors import KeepError
from ..face.align import estimate_affine
from ..image import list_images, read_image, write_image

GREY_RGB = (132, 133, 135)  # DicFace's border, BGR (135, 133, 132)


def read_clip_list(path: str | Path) -> list[tuple[str, int]]:
    """(clip name, number of frames) per line `<clip path>/<frames>` of DicFace's clip list."""
    clips = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        head, _, count = line.strip().rstrip("/").rpartition("/")
        if not head or not count.isdigit():
            raise KeepError(f"{path} line {number}: expected '<clip path>/<number of frames>', got {line.strip()!r}")
        clips.append((head.rpartition("/")[2], int(count)))
    if not clips:
        raise KeepError(f"{path}: no clips listed")
    return clips


def read_landmarks(path: str | Path) -> np.ndarray:
    """`(frames, 5, 2)` from a `<clip>.txt` landmark file: 10 numbers per line."""
    rows = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            values = [float(v) for v in line.split()]
        except ValueError:
            values = []
        if len(values) != 10:
            raise KeepError(f"{path} line {number}: expected 10 numbers (5 points x, y), got {line.strip()[:60]!r}")
        rows.append(values)
    if not rows:
        raise KeepError(f"{path}: no landmark lines")
    return np.array(rows, np.float64).reshape(-1, 5, 2)


def align(frame: np.ndarray, landmarks: np.ndarray, gt_size: int) -> np.ndarray:
    """A frame aligned as DicFace aligns it: template at 512 scaled by the frame's size / the GT's."""
    scale = frame.shape[0] / gt_size
    matrix = estimate_affine(landmarks * scale, round(512 * scale))
    size = (frame.shape[1], frame.shape[0])
    return cv2.warpAffine(
        frame, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=GREY_RGB
    )


def _write_clip(folder: Path, names: list[str], frames) -> None:
    """Write a clip into `.<clip>.partial/` and rename it when complete (an interrupted run leaves no half clip)."""
    partial = folder.parent / f".{folder.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for name, frame in zip(names, frames, strict=True):
        write_image(partial / f"{name}.png", frame)
    if folder.is_dir():
        shutil.rmtree(folder)
    partial.rename(folder)


def align_release(
    gt: str | Path,
    landmarks: str | Path,
    root: str | Path,
    *,
    clip_list: str | Path | None = None,
    lq: str | Path | None = None,
) -> list[str]:
    """Align every listed clip (default: every GT clip folder with a landmark file) into `root/GT` (512)
    and, with `lq`, `root/LQ` (GT / 4); returns the clip names written."""
    gt, landmarks, root = Path(gt), Path(landmarks), Path(root)
    if clip_list is not None:
        clips = read_clip_list(clip_list)
    else:
        folders = sorted(p.name for p in gt.iterdir() if p.is_dir()) if gt.is_dir() else []
        clips = [(name, 0) for name in folders if (landmarks / f"{name}.txt").is_file()]
    if not clips:
        raise KeepError(f"no clips in {gt} with a landmark file <clip>.txt in {landmarks}")
    for name, count in clips:
        files = list_images(gt / name) if (gt / name).is_dir() else []
        if not files or len(files) < count:
            raise KeepError(f"clip {name}: {len(files)} frames in {gt / name}, the clip list says {count}")
        files = files[:count] if count else files
        marks = read_landmarks(landmarks / f"{name}.txt") if (landmarks / f"{name}.txt").is_file() else None
        if marks is None or len(marks) < len(files):
            have = "no landmark file" if marks is None else f"{len(marks)} landmark lines"
            raise KeepError(f"clip {name}: {have} in {landmarks} for {len(files)} frames")
        frames = [read_image(p) for p in files]
        gt_size = frames[0].shape[0]
        names = [p.stem for p in files]
        _write_clip(root / "GT" / name, names, (align(f, m, gt_size) for f, m in zip(frames, marks, strict=False)))
        if lq is not None:
            lq_frames = [read_image(Path(lq) / name / p.name) for p in files]
            small = gt_size // 4
            aligned = (align(f, m, gt_size) for f, m in zip(lq_frames, marks, strict=False))
            _write_clip(
                root / "LQ" / name,
                names,
                (
                    a if a.shape[0] == small else cv2.resize(a, (small, small), interpolation=cv2.INTER_AREA)
                    for a in aligned
                ),
            )
    return [name for name, _ in clips]
