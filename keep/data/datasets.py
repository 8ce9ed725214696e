"""Datasets of aligned face clips: a video file, a folder of clips (VFHQ layout after
`scripts/prepare_vfhq.py`), or a folder of images. Each item is a (gt, lq) pair of clips.

Sources:
- `video`: one video file, read as inference reads it (`keep.video.open_input`: upright, every frame at
  the first frame's size); the whole frame, center-cropped to a square and resized, is treated as an
  aligned face (tiny CPU runs on the sample carphone clip; no face detection).
- `clips`: `root/<clip>/<frame>.png|jpg` of aligned crops (what `prepare_vfhq.py` writes).
- `images`: `root/*.png|jpg` aligned single faces (stage I / II); every item is a one-frame clip.

Clip sampling (the released options; docs/training.md): an item is a start frame; its frame interval
is drawn from `intervals` (frames start, start + i, ..., start + (T-1) i; the start moves back when the
clip ends too early for that interval, and an interval longer than the clip allows is never drawn), and
with `random_reverse` the clip is played backwards half of the time.

Determinism (docs/training.md): an item is addressed by `(epoch, index)`; its random generator is seeded from
`(seed, epoch, index)` only, so a sample does not depend on worker, rank or what came before. It draws,
in this order: the interval, the reversal, the flip, then the degradation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import cv2
import numpy as np
import torch

from ..config import ConfigValueError, NonNegativeInt, PositiveInt, Range, check_fields
from ..errors import KeepError
from ..image import IMAGE_SUFFIXES, list_images, read_image, to_tensor  # noqa: F401 (IMAGE_SUFFIXES re-exported)
from ..video import open_input
from .degradations import DegradationConfig, degrade_clip

SOURCES = ("video", "clips", "images")


@dataclass
class DataConfig:
    source: str = "video"  # one of SOURCES
    path: str = "assets/carphone_sample.mp4"  # the sample clip in the repository (relative: to the working folder)
    gt_size: PositiveInt = 64  # square GT crops; must equal the model's img_size
    clip_length: PositiveInt = 1  # frames per item (1 for stage I)
    # [start, stop) of the frames used (video source; stop -1 = the end)
    frame_range: tuple[NonNegativeInt, Annotated[int, Range(-1)]] = (0, -1)
    stride: PositiveInt = 1  # step between the first frames of consecutive clips
    intervals: tuple[PositiveInt, ...] = (1,)  # frame interval of a clip, drawn uniformly among these
    random_reverse: bool = False  # play half of the clips backwards
    hflip: bool = True  # random horizontal flip (one draw per clip)
    batch_size: PositiveInt = 4  # per process
    num_workers: NonNegativeInt = 0
    degradation: DegradationConfig = field(default_factory=DegradationConfig)

    def __post_init__(self) -> None:
        check_fields(self)
        if not self.intervals:
            raise ConfigValueError("intervals", "a non-empty list of integers >= 1", self.intervals)
        start, stop = self.frame_range
        if stop != -1 and stop <= start:
            raise ConfigValueError(
                "frame_range", "a [start, stop) pair with stop > start, or stop -1", self.frame_range
            )


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


def read_frames(path: str | Path, size: int, frame_range: tuple[int, int] = (0, -1)) -> np.ndarray:
    """Frames `[start, stop)` (stop -1: to the end) of a video file or a folder of frames, read as inference
    reads them (`keep.video.open_input`: upright, all at the first frame's size), each center-cropped to a
    square and resized -> uint8 RGB `(T, size, size, 3)`. KeepError when no frame of that range decodes."""
    start, stop = frame_range
    frames, decoded = [], iter(open_input(path))
    try:
        for frame in decoded:
            if stop >= 0 and frame.index >= stop:
                break
            if frame.index >= start:
                frames.append(square_resize(frame.rgb, size))
    finally:
        decoded.close()  # the file, also when the range ends before the video
    if not frames:
        raise KeepError(f"video {path} has no frames in frame_range {list(frame_range)}")
    return np.stack(frames)


def check_data_path(root: Path, source: str, section: str = "data") -> None:
    """KeepError unless `root` is what `source` reads: a video file (video) or a folder (clips, images)."""
    if not root.exists():
        raise KeepError(f"{section}.path {root} does not exist ({section}.source '{source}')")
    if root.is_dir() and not any(root.iterdir()):
        raise KeepError(f"{section}.path {root} is an empty folder: no videos or frames in it")
    if source == "video" and root.is_dir():
        raise KeepError(
            f"{section}.path {root} is a folder, and {section}.source 'video' reads one video file; a folder of "
            f"clip folders of frames is {section}.source 'clips', a folder of face images 'images'"
        )
    if source != "video" and not root.is_dir():
        raise KeepError(
            f"{section}.path {root} is a file, and {section}.source '{source}' reads a folder; "
            f"a video file is {section}.source 'video'"
        )


class FaceClipDataset(torch.utils.data.Dataset):
    """Items `(epoch, index)` -> {"gt": (T, 3, S, S), "lq": (T, 3, S, S), "lq_small": (T, 3, S/s, S/s)}
    in [-1, 1]; `lq` is the degraded clip resized back to S (bicubic), the network's input size."""

    def __init__(self, cfg: DataConfig, *, seed: int = 0, section: str = "data"):
        """`section`: the config key of `cfg` (data, val) that error messages name."""
        if cfg.source not in SOURCES:
            raise KeepError(f"unknown {section}.source '{cfg.source}'; choose one of {list(SOURCES)}")
        self.cfg = cfg
        self.seed = seed
        self._video: np.ndarray | None = None
        self.clips: list[list[Path]] = []  # clips / images: file lists
        # frames a clip spans at the smallest interval: every start must fit at least that one
        length, stride = (cfg.clip_length - 1) * min(cfg.intervals) + 1, cfg.stride
        root = Path(cfg.path)
        check_data_path(root, cfg.source, section)
        if cfg.source == "video":
            self._video = read_frames(root, cfg.gt_size, cfg.frame_range)
            self.starts = list(range(0, len(self._video) - length + 1, stride))
        else:
            if cfg.source == "images":
                self.clips = [[p] for p in list_images(root)]
                if length != 1:
                    raise KeepError(f"{section}.source 'images' holds single frames: set {section}.clip_length to 1")
            else:
                self.clips = [list_images(d) for d in sorted(root.iterdir()) if d.is_dir()]
            if not any(self.clips):
                layout = "<path>/<clip>/<frame>" if cfg.source == "clips" else "<path>/<face>"
                raise KeepError(
                    f"{section}.path {root} holds no frames for {section}.source '{cfg.source}' "
                    f"({layout} with suffix {', '.join(IMAGE_SUFFIXES)})"
                )
            self.starts = [
                (c, s) for c, files in enumerate(self.clips) for s in range(0, len(files) - length + 1, stride)
            ]
        if not self.starts:
            raise KeepError(f"no clip of {length} frames in {root} ({cfg.source})")

    def __len__(self) -> int:
        return len(self.starts)

    def frame_indices(self, index: int, rng: np.random.Generator) -> np.ndarray:
        """Frame numbers (within the item's clip) of item `index`: interval and reversal drawn from `rng`."""
        cfg = self.cfg
        if self._video is not None:
            frames, start = len(self._video), self.starts[index]
        else:
            clip, start = self.starts[index]
            frames = len(self.clips[clip])
        fitting = [i for i in cfg.intervals if (cfg.clip_length - 1) * i < frames]
        interval = fitting[rng.integers(len(fitting))]
        start = min(start, frames - 1 - (cfg.clip_length - 1) * interval)
        order = start + interval * np.arange(cfg.clip_length)
        reverse = rng.uniform() < 0.5  # always drawn, so the stream after it does not depend on the option
        return order[::-1].copy() if cfg.random_reverse and reverse else order

    def gt_frames(self, index: int, order: np.ndarray) -> np.ndarray:
        """uint8 RGB `(T, S, S, 3)`: frames `order` of item `index`'s clip."""
        if self._video is not None:
            return self._video[order]
        clip, _ = self.starts[index]
        return np.stack([square_resize(read_image(self.clips[clip][i]), self.cfg.gt_size) for i in order])

    def __getitem__(self, key: tuple[int, int] | int) -> dict[str, torch.Tensor]:
        """-> gt, lq `(T, 3, S, S)`, lq_small `(T, 3, S/s, S/s)` in [-1, 1], frame_index `(T,)` int64."""
        epoch, index = key if isinstance(key, tuple) else (0, key)
        rng = np.random.default_rng([self.seed, epoch, index])
        order = self.frame_indices(index, rng)
        gt = self.gt_frames(index, order)
        if self.cfg.hflip and rng.uniform() < 0.5:
            gt = gt[:, :, ::-1]
        gt = np.ascontiguousarray(gt)
        lq_small = degrade_clip(gt, rng, self.cfg.degradation)
        size = self.cfg.gt_size
        lq = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_CUBIC) for f in lq_small])
        return {
            "gt": to_tensor(gt),
            "lq": to_tensor(lq),
            "lq_small": to_tensor(lq_small),
            "frame_index": torch.from_numpy(order.astype(np.int64)),
        }


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
