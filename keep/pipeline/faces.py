"""Stage 2, faces: detect every face, track it (a Kalman filter per face), interpolate short gaps and
smooth the landmarks over time (a bounded look-ahead), frame by frame.

Faces smaller than `min_face` pixels are not restored and are counted (`small_faces_skipped`); the size
is `face_size`: 3x the distance from the eye centre to the mouth centre, about the face's height.
Detectors that have `detect_batch(list of frames) -> list of detections per frame` get `batch` frames
at a time; others are called frame by frame.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ..face.tracker import FaceTracker, TrackSmoother
from .items import FaceFrame, FramePool, StageTimer


def face_size(landmarks: np.ndarray) -> float:
    """A scale-invariant face size: 3x the distance from the eye centre to the mouth centre."""
    return float(3 * np.linalg.norm(landmarks[3:5].mean(0) - landmarks[0:2].mean(0)))


class FaceStage:
    """Frames in, `FaceFrame`s out (delayed by the smoother's look-ahead, order kept)."""

    def __init__(
        self, detector, *, min_face: float, max_gap: int, smooth_sigma: float, timer: StageTimer, batch: int = 8
    ):
        self.detector = detector
        self.min_face = min_face
        self.max_gap = max_gap
        self.smooth_sigma = smooth_sigma
        self.timer = timer
        self.batch = batch if hasattr(detector, "detect_batch") else 1
        self.start(None)

    @property
    def held(self) -> int:
        """Most frames this stage holds at once (pool slots it may keep)."""
        return self.batch + TrackSmoother(max_gap=self.max_gap, sigma=self.smooth_sigma).lookahead

    def start(self, pool: FramePool | None) -> None:
        self.pool = pool
        self.tracker = FaceTracker(max_gap=self.max_gap)
        self.smoother = TrackSmoother(max_gap=self.max_gap, sigma=self.smooth_sigma)
        self.pending: list[tuple[int, int, int | None]] = []
        self.small_faces_skipped = 0

    def push(self, index: int, slot: int, pts: int | None) -> Iterator[FaceFrame]:
        self.pending.append((index, slot, pts))
        if len(self.pending) >= self.batch:
            yield from self._detect_pending()

    def finish(self) -> Iterator[FaceFrame]:
        yield from self._detect_pending()
        for index, (slot, pts, live), faces in self.smoother.flush():
            yield FaceFrame(index, slot, pts, faces, live)

    def _detect_pending(self) -> Iterator[FaceFrame]:
        frames = [self.pool[slot] for _, slot, _ in self.pending]
        with self.timer("detect"):
            if self.batch > 1:
                found = self.detector.detect_batch(frames)
            else:
                found = [self.detector(rgb) for rgb in frames]
        for (index, slot, pts), detections in zip(self.pending, found, strict=True):
            with self.timer("track"):
                large = [d for d in detections if face_size(d.landmarks) >= self.min_face]
                self.small_faces_skipped += len(detections) - len(large)
                ids = self.tracker.update(large)
                observations = {i: d.landmarks for i, d in zip(ids, large, strict=True)}
                live = frozenset(self.tracker.tracks)
                ready = list(self.smoother.push(index, (slot, pts, live), observations))
            for ready_index, (ready_slot, ready_pts, ready_live), faces in ready:
                yield FaceFrame(ready_index, ready_slot, ready_pts, faces, ready_live)
        self.pending = []

    def stats(self) -> dict:
        return {"small_faces_skipped": self.small_faces_skipped, "detector": getattr(self.detector, "name", None)}


class WholeFrameStage:
    """`--has_aligned`: every frame is already an aligned face, restored as one track (id 0)."""

    held = 0

    def start(self, pool: FramePool | None) -> None:
        pass

    def push(self, index: int, slot: int, pts: int | None) -> Iterator[FaceFrame]:
        yield FaceFrame(index, slot, pts, {0: None}, frozenset({0}))

    def finish(self) -> Iterator[FaceFrame]:
        return iter(())

    def stats(self) -> dict:
        return {"small_faces_skipped": 0, "detector": None}
