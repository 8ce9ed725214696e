"""Stage 2, faces: detect every face, track it (a Kalman filter per face), interpolate short gaps and
smooth the landmarks over time (a bounded look-ahead), frame by frame.

Faces smaller than `min_face` pixels are not restored and are counted (`small_faces_skipped`); the size
is `face_size`: 3x the distance from the eye centre to the mouth centre, about the face's height. Tracks
detected in fewer than `min_track` frames are not restored either (`short_tracks`: a detector's one- to
three-frame false positives; `keep.face.tracker.TrackSmoother` decides within its look-ahead).
Detectors that have `detect_batch(list of frames) -> list of detections per frame` get `batch` frames
at a time; others are called frame by frame.

The tracker's settings (min_face, min_track, max_gap, smooth_sigma) and `--has_aligned` are the input's
(`Job.settings`): the detector is built once, a tracker and a smoother are made for every input.
Which faces go on to be restored is the job's `FacePlan` (`--faces`, keep.pipeline.choice): the others go on
as faces left alone. After a survey pass the plan replays the survey's records instead of detecting again.
Every track found is counted here (`found_tracks`: frames, first, last), restored or not.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ..face.tracker import FaceTracker, TrackSmoother
from .items import FaceFrame, FrameRef, Job
from .stage import Slots, Stage

log = logging.getLogger(__name__)

DETECT_BATCH = 8  # frames per detector call (`detect_batch`)


def face_size(landmarks: np.ndarray) -> float:
    """A scale-invariant face size: 3x the distance from the eye centre to the mouth centre."""
    return float(3 * np.linalg.norm(landmarks[3:5].mean(0) - landmarks[0:2].mean(0)))


@dataclass(frozen=True)
class FacesSpec:
    """What the faces stage is built from (`--detector`); the tracker's settings and `--has_aligned` come with
    each input (`Job.settings`)."""

    detector: str
    device: str
    detect_size: int

    def build(self) -> FaceStage:
        from ..face.detectors import build_detector

        detector = build_detector(self.detector, device=self.device, detect_size=self.detect_size)
        log.info("face detector: %s", detector.name)
        return FaceStage(detector)

    def run_held(self, settings) -> int:
        """Frame slots the stage holds beyond its `held` for a run with `settings` (`RunOptions`): the smoother's
        look-ahead."""
        return 0 if settings.has_aligned else smoother_of(settings).lookahead


def smoother_of(settings) -> TrackSmoother:
    """The look-ahead smoother of a run's tracker settings (`RunOptions`: max_gap, smooth_sigma, min_track)."""
    return TrackSmoother(max_gap=settings.max_gap, sigma=settings.smooth_sigma, min_track=settings.min_track)


class FaceStage(Stage):
    """`FrameRef`s in, `FaceFrame`s out (delayed by the smoother's look-ahead, order kept). With `--has_aligned`
    every frame is already an aligned face, restored as one track (id 0): nothing is detected."""

    def __init__(self, detector, *, batch: int = DETECT_BATCH):
        super().__init__()
        self.detector = detector
        self.batch = batch if hasattr(detector, "detect_batch") else 1
        self.held = self.batch  # and the look-ahead of each input's smoother (`FacesSpec.run_held`)

    def start(self, job: Job, slots: Slots) -> None:
        settings = job.settings
        self.pool = job.pool
        self.aligned = settings.has_aligned
        self.min_face = settings.min_face
        self.tracker = FaceTracker(max_gap=settings.max_gap)
        self.smoother = smoother_of(settings)
        self.pending: list[FrameRef] = []
        self.small_faces_skipped = 0
        self.found = FoundTracks()
        self.plan = job.faces
        self.replay = self.plan.replay() if self.plan is not None and self.plan.records is not None else None

    def push(self, frame: FrameRef) -> list[FaceFrame]:
        if self.aligned:
            return [self._emit(FaceFrame(frame.index, frame.slot, frame.pts, {0: None}, frozenset({0})))]
        if self.replay is not None:
            with self.timer("track"):
                return [self._emit(self.replay.frame(frame))]
        self.pending.append(frame)
        return self._detect_pending() if len(self.pending) >= self.batch else []

    def finish(self) -> list[FaceFrame]:
        self._close_replay()
        out = self._detect_pending() if self.pending else []
        for index, (slot, pts, live), faces in self.smoother.flush():
            out.append(self._emit(FaceFrame(index, slot, pts, faces, live)))
        return out

    def abort(self) -> None:
        self._close_replay()

    def _close_replay(self) -> None:
        replay, self.replay = getattr(self, "replay", None), None
        if replay is not None:
            replay.close()

    def _emit(self, frame: FaceFrame) -> FaceFrame:
        """Count the frame's tracks; split its faces by the plan (chosen / left alone)."""
        self.found.add(frame)
        return frame if self.plan is None else self.plan.split(frame)

    def _detect_pending(self) -> list[FaceFrame]:
        frames = [self.pool[frame.slot] for frame in self.pending]
        with self.timer("detect"):
            if self.batch > 1:
                found = self.detector.detect_batch(frames)
            else:
                found = [self.detector(rgb) for rgb in frames]
        out = []
        for frame, detections in zip(self.pending, found, strict=True):
            with self.timer("track"):
                large = [d for d in detections if face_size(d.landmarks) >= self.min_face]
                self.small_faces_skipped += len(detections) - len(large)
                ids = self.tracker.update(large)
                observations = {i: d.landmarks for i, d in zip(ids, large, strict=True)}
                live = frozenset(self.tracker.tracks)
                ready = list(self.smoother.push(frame.index, (frame.slot, frame.pts, live), observations))
            for index, (slot, pts, ready_live), faces in ready:
                out.append(self._emit(FaceFrame(index, slot, pts, faces, ready_live)))
        self.pending = []
        return out

    def stats(self) -> dict:
        short = self.smoother.short_tracks()  # tracks never given out: {id: frames detected}
        return {
            "detector": None if self.aligned else getattr(self.detector, "name", None),
            "small_faces_skipped": self.small_faces_skipped, "short_tracks": dict(sorted(short.items())),
            "found_tracks": self.found.tracks,
        }  # fmt: skip


class FoundTracks:
    """Every track's faces counted: `tracks` = {track: [frames, first frame, last frame]}."""

    def __init__(self):
        self.tracks: dict[int, list[int]] = {}

    def add(self, frame: FaceFrame) -> None:
        for track in frame.faces:
            counts = self.tracks.setdefault(int(track), [0, frame.index, frame.index])
            counts[0] += 1
            counts[2] = frame.index
