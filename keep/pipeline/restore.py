"""Stage 3, restore: align every tracked face to the FFHQ template and restore the faces of `window`
consecutive frames with KEEP, all tracks in one batched call, each track's Kalman / KEEP state carried
over the whole track (`keep.streaming.StreamingRestorer`, one stream per track; the precision is the
model's, `keep.restorer.Restorer`; the fidelity is the input's, set on the model when the input starts).

A track's state is kept while the tracker keeps the track, even through a window where it has no face
(a face missed for a few frames goes on from its history), and dropped when the tracker drops it.
Memory: one window of aligned crops plus one state per live track. Faces left alone (`--faces`) never
reach the network: they go on with their alignment only, so the paste stage can log where they are.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from dataclasses import dataclass

import cv2
import numpy as np

from ..face.align import align_face, estimate_affine
from ..image import to_tensor, to_uint8
from ..restorer import Restorer
from ..streaming import StreamingRestorer
from .items import FaceFrame, Job, RestoredFace, RestoredFrame
from .stage import Slots, Stage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RestoreSpec:
    """The restore stage runs where the network was loaded (the main process, which owns its device); the
    fidelity and the gain's context come with each input (`Job.settings`)."""

    model: Restorer
    window: int

    def build(self) -> RestoreStage:
        return RestoreStage(self.model, window=self.window)


class RestoreStage(Stage):
    """`FaceFrame`s in; `RestoredFrame`s out, a window at a time, order kept."""

    def __init__(self, model: Restorer, *, window: int):
        super().__init__()
        self.model = model
        self.size = model.config.img_size
        self.window = window
        self.held = window  # the frames of the window being gathered

    def info(self) -> dict:
        return {"flow": getattr(self.model.flow, "name", None)}  # what `--flow auto` chose (keep.flow.choose_auto)

    def start(self, job: Job, slots: Slots) -> None:
        self.pool = job.pool
        self.model.fidelity = job.settings.fidelity  # the CFT weight of this input's every window
        self.streams = StreamingRestorer(
            self.model, window=self.window, gain_context=job.settings.gain_context, timer=self.timer
        )
        # per frame: {track: (alignment matrix, aligned crop; None for a face left alone)}
        self.chunk: list[tuple[FaceFrame, dict[int, tuple[np.ndarray | None, np.ndarray | None]]]] = []
        self.track_frames: Counter[int] = Counter()

    def push(self, frame: FaceFrame) -> list[RestoredFrame]:
        with self.timer("align"):
            rgb = self.pool[frame.slot]
            aligned = {}
            for track, landmarks in frame.faces.items():
                if landmarks is None:  # --has_aligned: the frame is the face
                    crop = cv2.resize(rgb, (self.size, self.size), interpolation=cv2.INTER_AREA)
                    aligned[track] = (None, crop)
                else:
                    matrix = estimate_affine(landmarks, self.size)
                    aligned[track] = (matrix, align_face(rgb, matrix, self.size))
            for track, landmarks in frame.left.items():
                aligned[track] = (estimate_affine(landmarks, self.size), None)
        self.chunk.append((frame, aligned))
        return self._restore_chunk() if len(self.chunk) == self.window else []

    def finish(self) -> list[RestoredFrame]:
        return self._restore_chunk() if self.chunk else []

    def _restore_chunk(self) -> list[RestoredFrame]:
        per_track: dict[int, list[np.ndarray]] = defaultdict(list)
        for _, aligned in self.chunk:
            for track, (_, crop) in aligned.items():
                if crop is not None:
                    per_track[track].append(crop)
        restored: dict[int, list[np.ndarray]] = {}
        if per_track:
            device = self.model.device  # move uint8 crops: 4x fewer bytes than float
            windows = {track: to_tensor(np.stack(crops), device) for track, crops in per_track.items()}  # (T, 3, S, S)
            outputs = self.streams.step(windows)
            restored = {track: list(to_uint8(result.out)) for track, result in outputs.items()}
        # the tracker's verdict on the chunk's last frame decides which states live on
        self.streams.retain(self.chunk[-1][0].live | per_track.keys())
        out, used = [], Counter()
        for frame, aligned in self.chunk:
            faces = []
            for track, (matrix, crop) in aligned.items():
                if crop is None:
                    faces.append(RestoredFace(track, matrix, None))
                    continue
                faces.append(RestoredFace(track, matrix, restored[track][used[track]]))
                used[track] += 1
            out.append(RestoredFrame(frame.index, frame.slot, frame.pts, faces))
        self.track_frames.update(used)
        self.chunk = []
        return out

    def stats(self) -> dict:
        return {"restored_frames": {int(t): n for t, n in sorted(self.track_frames.items())}}
