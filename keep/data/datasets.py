"""Datasets of aligned face clips: a video file, a folder of clips (VFHQ layout after
`scripts/prepare_vfhq.py`), or a folder of images. Each item is a (gt, lq) pair of clips.

Sources:
- `video`: one video file; the whole frame, center-cropped to a square and resized, is treated as an
  aligned face (tiny CPU runs on the sample carphone clip; no face detection).
- `clips`: `root/<clip>/<frame>.png|jpg` of aligned crops (what `prepare_vfhq.py` writes).
- `images`: `root/*.png|jpg` aligned single faces (stage I / II); every item is a one-frame clip.

Determinism (issue #4): an item is addressed by `(epoch, index)`; its random generator is seeded from
`(seed, epoch, index)` only, so a sample does not depend on worker, rank or what came before.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from ..errors import KeepError
from ..image import IMAGE_SUFFIXES, list_images, read_image, to_tensor  # noqa: F401 (IMAGE_SUFFIXES re-exported)
from .degradations import DegradationConfig, degrade_clip

SOURCES = ("video", "clips", "images")


@dataclass
class DataConfig:
    source: str = "video"  # one of SOURCES
    path: str = "assets/carphone.mp4"
    gt_size: int = 64  # square GT crops; must equal the model's img_size
    clip_length: int = 1  # frames per item (1 for stages I and II)
    frame_range: tuple[int, int] = (0, -1)  # [start, stop) of frames used (video source; -1 = end)
    stride: int = 1  # step between the first frames of consecutive clips
    hflip: bool = True  # random horizontal flip (one draw per clip)
    batch_size: int = 4  # per process
    num_workers: int = 0
    degradation: DegradationConfig = field(default_factory=DegradationConfig)


def read_video(path: str | Path) -> np.ndarray:
    """All frames of a video file -> uint8 RGB `(T, H, W, 3)`."""
    import av

    path = Path(path)
    if not path.is_file():
        raise KeepError(f"video not found: {path}")
    try:
        with av.open(str(path)) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    except av.error.FFmpegError as exc:
        raise KeepError(f"cannot decode video {path}: {exc}") from None
    if not frames:
        raise KeepError(f"video {path} has no frames")
    return np.stack(frames)


def square_resize(img: np.ndarray, size: int) -> np.ndarray:
    """Center-crop an image `(H, W, 3)` to a square and resize it to `(size, size, 3)`."""
    height, width = img.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    crop = img[top : top + side, left : left + side]
    if side == size:
        return np.ascontiguousarray(crop)
    interp = cv2.INTER_AREA if side > size else cv2.INTER_CUBIC
    return cv2.resize(crop, (size, size), interpolation=interp)


class FaceClipDataset(torch.utils.data.Dataset):
    """Items `(epoch, index)` -> {"gt": (T, 3, S, S), "lq": (T, 3, S, S), "lq_small": (T, 3, S/s, S/s)}
    in [-1, 1]; `lq` is the degraded clip resized back to S (bicubic), the network's input size."""

    def __init__(self, cfg: DataConfig, *, seed: int = 0):
        if cfg.source not in SOURCES:
            raise KeepError(f"unknown data source '{cfg.source}'; choose one of {list(SOURCES)}")
        self.cfg = cfg
        self.seed = seed
        self._video: np.ndarray | None = None
        self.clips: list[list[Path]] = []  # clips / images: file lists
        length, stride = cfg.clip_length, max(cfg.stride, 1)
        root = Path(cfg.path)
        if cfg.source == "video":
            frames = read_video(root)
            start, stop = cfg.frame_range
            stop = len(frames) if stop < 0 else min(stop, len(frames))
            frames = frames[start:stop]
            self._video = np.stack([square_resize(f, cfg.gt_size) for f in frames])
            self.starts = list(range(0, len(frames) - length + 1, stride))
        else:
            if not root.is_dir():
                raise KeepError(f"data folder not found: {root}")
            if cfg.source == "images":
                self.clips = [[p] for p in list_images(root)]
                if length != 1:
                    raise KeepError("data.source 'images' holds single frames: set data.clip_length to 1")
            else:
                self.clips = [list_images(d) for d in sorted(root.iterdir()) if d.is_dir()]
            self.starts = [
                (c, s) for c, files in enumerate(self.clips) for s in range(0, len(files) - length + 1, stride)
            ]
        if not self.starts:
            raise KeepError(f"no clip of {length} frames in {root} ({cfg.source})")

    def __len__(self) -> int:
        return len(self.starts)

    def gt_frames(self, index: int) -> np.ndarray:
        """uint8 RGB `(T, S, S, 3)` of item `index`."""
        length = self.cfg.clip_length
        if self._video is not None:
            start = self.starts[index]
            return self._video[start : start + length]
        clip, start = self.starts[index]
        files = self.clips[clip][start : start + length]
        return np.stack([square_resize(read_image(p), self.cfg.gt_size) for p in files])

    def __getitem__(self, key: tuple[int, int] | int) -> dict[str, torch.Tensor]:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        rng = np.random.default_rng([self.seed, epoch, index])
        gt = self.gt_frames(index)
        if self.cfg.hflip and rng.uniform() < 0.5:
            gt = gt[:, :, ::-1]
        gt = np.ascontiguousarray(gt)
        lq_small = degrade_clip(gt, rng, self.cfg.degradation)
        size = self.cfg.gt_size
        lq = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_CUBIC) for f in lq_small])
        return {"gt": to_tensor(gt), "lq": to_tensor(lq), "lq_small": to_tensor(lq_small)}


class StepBatchSampler(torch.utils.data.Sampler):
    """Batches as a pure function of the step: the global batch of step s holds items
    `s * B_global ... (s + 1) * B_global - 1` of an endless sequence of epochs, each epoch a permutation
    seeded from (seed, epoch). Rank r takes every world-th item (what `DistributedSampler` does), so
    resuming at step s needs nothing but s. Yields lists of (epoch, index) keys."""

    def __init__(
        self, size: int, *, batch_size: int, seed: int, start_step: int, total_steps: int, rank: int = 0, world: int = 1
    ):
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.start_step, self.total_steps, self.rank, self.world = start_step, total_steps, rank, world

    def keys(self, step: int) -> list[tuple[int, int]]:
        global_batch = self.batch_size * self.world
        positions = range(step * global_batch + self.rank, (step + 1) * global_batch, self.world)
        out = []
        for pos in positions:
            epoch, offset = divmod(pos, self.size)
            perm = np.random.default_rng([self.seed, epoch]).permutation(self.size)
            out.append((epoch, int(perm[offset])))
        return out

    def __iter__(self):
        for step in range(self.start_step, self.total_steps):
            yield self.keys(step)

    def __len__(self) -> int:
        return max(self.total_steps - self.start_step, 0)
