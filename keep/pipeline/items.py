"""What flows between the pipeline's stages, and the shared frame pool.

Decoded frames live in a `FramePool`: a fixed number of frame slots, in shared memory when stages run
in other processes, so a frame is written once by the decoder and read in place by alignment and
paste; the queues carry slot numbers, landmarks and restored faces, never whole frames. A slot is
taken by the decoder and given back once the frame is pasted, so the number of slots bounds the
pipeline's memory whatever the video's length (and the decoder waits when all are in use).
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
    """An output frame `(H*u, W*u, 3)` uint8 and its face records (the `--save_faces` log's)."""

    index: int
    pts: int | None
    rgb: np.ndarray
    records: list[dict]


@dataclass
class Job:
    """One input as the stages see it: where its frames come from, the frame pool they live in, what the
    encoder writes (`keep.pipeline.encode.EncodeJob`). Sent to every worker once per input."""

    source: Path
    fps: float
    pool: FramePool
    encode: Any
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
    """`count` frame slots `(H, W, 3)` uint8; in shared memory (`shared=True`) for stage processes."""

    def __init__(self, count: int, height: int, width: int, *, shared: bool = False):
        self.tensor = torch.empty((count, height, width, 3), dtype=torch.uint8)
        if shared:
            self.tensor.share_memory_()
        self.frames = self.tensor.numpy()

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, slot: int) -> np.ndarray:
        return self.frames[slot]

    def __getstate__(self) -> dict:
        return {"tensor": self.tensor}  # pickled by torch as a shared-memory handle, not as bytes

    def __setstate__(self, state: dict) -> None:
        self.tensor = state["tensor"]
        self.frames = self.tensor.numpy()


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
