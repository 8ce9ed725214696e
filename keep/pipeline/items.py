"""What flows between the pipeline's stages, and the shared frame pool.

Decoded frames live in a `FramePool`: a fixed number of frame slots, in shared memory when stages run
in other processes, so a frame is written once by the decoder and read in place by detection, alignment
and paste; the queues carry slot numbers, landmarks and restored faces, never whole frames. A slot is
taken by the decoder and given back once the frame is pasted, so the number of slots bounds the
pipeline's memory whatever the video's length (and the decoder waits when all are in use). Each slot
holds the frame twice: as the networks see it (8-bit RGB) and as decoded, in the input's own pixel format
and depth (`keep.video.colour`), which the paste writes faces into and the encoder receives.
"""

from __future__ import annotations

import time
import traceback
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import KeepError
from ..video.colour import SRGB, Colour


@dataclass
class FrameRef:
    """A decoded frame: its pixels are in `pool[slot]`."""

    index: int
    slot: int
    pts: int | None


@dataclass
class FaceFrame:
    """A decoded frame with the landmarks `(5, 2)` of every tracked face (None: the frame is the face)."""

    index: int
    slot: int
    pts: int | None
    faces: dict[int, np.ndarray | None]
    live: frozenset[int]  # tracks the tracker still keeps after this frame (their restorer state is kept)
    left: dict[int, np.ndarray] = field(default_factory=dict)  # faces of tracks not chosen (`--faces`): left alone


@dataclass
class RestoredFace:
    track: int
    matrix: np.ndarray | None  # (2, 3) frame -> aligned crop; None: the crop is the whole frame
    face: np.ndarray | None  # (S, S, 3) uint8 restored crop; None: a face not chosen, left as it is


@dataclass
class RestoredFrame:
    index: int
    slot: int
    pts: int | None
    faces: list[RestoredFace]


@dataclass
class Composed:
    """An output frame `(H*u, W*u)`: its planes in the input's colour (`FramePool.colour`; RGB `(H*u, W*u, 3)`
    uint8 for images), and its face records (the `--save_faces` log's)."""

    index: int
    pts: int | None
    planes: list[np.ndarray]
    records: list[dict]


@dataclass
class Job:
    """One input as the stages see it: where its frames come from, the frame pool they live in, what the
    encoder writes (`keep.pipeline.encode.EncodeJob`), the run's settings (`keep.pipeline.options.RunOptions`:
    each stage applies its own to this input). Sent to every worker once per input."""

    source: Path
    pool: FramePool
    encode: Any
    settings: Any  # RunOptions
    reader: Any = None  # the reader the main process opened, where the decode stage runs in that process
    faces: Any = None  # which tracks to restore (`keep.pipeline.choice.FacePlan`); None: every face
    survey: Any = None  # a survey pass instead of a restoration (`keep.pipeline.survey.SurveyJob`)


@dataclass
class End:
    """End of a video's stream, with what the stages upstream counted."""

    stats: dict = field(default_factory=dict)


@dataclass
class Ready:
    """A stage worker is built (its models loaded); `info` says which (detector, mask, upsampler)."""

    info: dict = field(default_factory=dict)


@dataclass
class Failure:
    """An exception in a stage worker, carried to the main process as one line (+ traceback for KEEP_DEBUG)."""

    stage: str
    message: str
    user_error: bool  # a KeepError (bad input) rather than a bug
    traceback: str = ""

    @classmethod
    def from_exception(cls, stage: str, exc: BaseException) -> Failure:
        user_error = isinstance(exc, KeepError)
        message = str(exc) if user_error else f"{type(exc).__name__}: {exc}"
        return cls(stage, message, user_error, traceback.format_exc())


class StageError(RuntimeError):
    """An unexpected failure inside a stage (a bug, not bad input)."""


class FramePool:
    """`count` frame slots; in shared memory (`shared=True`) for stage processes. Slot k holds the networks'
    view `pool[k]` `(H, W, 3)` uint8 and the decoded frame's planes `pool.planes(k)` in `colour` (for RGB input
    the view is the frame: `planes(k) == [pool[k]]`)."""

    def __init__(self, count: int, height: int, width: int, *, colour: Colour = SRGB, shared: bool = False):
        self.colour = colour
        self.layout = [(0, (height, width, 3), np.dtype(np.uint8))]  # (byte offset, shape, dtype) per array
        end = height * width * 3
        if not colour.is_rgb:
            for shape in colour.plane_shapes(height, width):
                offset = -(-end // 64) * 64  # aligned, so that 16-bit planes view the bytes in place
                self.layout.append((offset, shape, np.dtype(colour.dtype)))
                end = offset + int(np.prod(shape)) * np.dtype(colour.dtype).itemsize
        self.tensor = torch.empty((count, end), dtype=torch.uint8)
        if shared:
            self.tensor.share_memory_()
        self.bytes = self.tensor.numpy()

    def __len__(self) -> int:
        return len(self.bytes)

    def _array(self, slot: int, index: int) -> np.ndarray:
        offset, shape, dtype = self.layout[index]
        size = int(np.prod(shape)) * dtype.itemsize
        return self.bytes[slot, offset : offset + size].view(dtype).reshape(shape)

    def __getitem__(self, slot: int) -> np.ndarray:
        return self._array(slot, 0)

    @property
    def frames(self) -> np.ndarray:
        """Every slot's networks' view `(count, H, W, 3)` (a view of the pool)."""
        shape = self.layout[0][1]
        return self.bytes[:, : int(np.prod(shape))].reshape(len(self), *shape)

    def planes(self, slot: int) -> list[np.ndarray]:
        return [self._array(slot, k) for k in range(1, len(self.layout))] or [self[slot]]

    def __getstate__(self) -> dict:
        # the tensor is pickled by torch as a shared-memory handle, not as bytes
        return {"tensor": self.tensor, "colour": self.colour, "layout": self.layout}

    def __setstate__(self, state: dict) -> None:
        self.tensor, self.colour, self.layout = state["tensor"], state["colour"], state["layout"]
        self.bytes = self.tensor.numpy()


class StageTimer:
    """Seconds spent in each stage (time inside the stage's own code, waits on queues excluded)."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - start
