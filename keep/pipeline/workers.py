"""The two groups of stages that run beside the restore stage, each in its own worker:

    front: decode -> detect -> track          (CPU-bound, holds the GIL: dlib, Python tracking)
    back:  background -> paste -> encode      (CPU-bound: warps, blends, libx264)

A worker is built once (its models loaded) and then serves one video after another. `FrontWorker.run`
is a source (it pulls frames from the reader); `BackWorker` is a sink fed one `RestoredFrame` at a
time. Both are plain objects: `keep.pipeline.runner` decides whether they run in processes, threads or
inline.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..background import build_upsampler
from ..face.parsing import build_masker
from ..video.io import open_input
from .compose import ComposeStage
from .decode import decode
from .encode import EncodeJob, EncodeStage
from .faces import FaceStage, WholeFrameStage
from .items import FaceFrame, FramePool, RestoredFrame, StageTimer
from .options import PipelineOptions

log = logging.getLogger(__name__)


@dataclass
class FrontJob:
    source: Path
    fps: float
    pool: FramePool


@dataclass
class BackJob:
    encode: EncodeJob
    pool: FramePool


class FrontWorker:
    """decode -> detect -> track, for one video after another."""

    def __init__(self, options: PipelineOptions):
        self.timer = StageTimer()
        if options.has_aligned:
            self.faces = WholeFrameStage()
        else:
            from ..face.detectors import build_detector

            detector = build_detector(options.detector, device=options.device, detect_size=options.detect_size)
            log.info("face detector: %s", detector.name)
            self.faces = FaceStage(
                detector, min_face=options.min_face, max_gap=options.max_gap, smooth_sigma=options.smooth_sigma,
                timer=self.timer,
            )  # fmt: skip

    @property
    def held(self) -> int:
        return self.faces.held

    def info(self) -> dict:
        return {"detector": self.faces.stats()["detector"], "held": self.held}

    def run(self, job: FrontJob, acquire: Callable[[], int], emit: Callable[[FaceFrame], None]) -> dict:
        """Stream one video; returns what it counted (skipped faces, where decoding stopped, seconds)."""
        self.timer.seconds.clear()
        reader = open_input(job.source, fps=job.fps)
        self.faces.start(job.pool)
        for index, slot, pts in decode(reader, job.pool, acquire, self.timer):
            for item in self.faces.push(index, slot, pts):
                emit(item)
        for item in self.faces.finish():
            emit(item)
        stats = {**self.faces.stats(), "stopped": reader.stopped, "timings": dict(self.timer.seconds)}
        return stats | {"resized_frames": reader.size_changes.count, "resized": reader.size_changes.message()}


class BackWorker:
    """background -> paste -> encode, for one video after another."""

    def __init__(self, options: PipelineOptions, size: int):
        self.timer = StageTimer()
        masker = build_masker(options.mask, size, device=options.device)
        log.info("paste mask: %s", masker.name)
        upsample = dict(device=options.device, tile=options.bg_tile)
        background = build_upsampler(options.bg_upsampler, **upsample)
        face_upsampler = None
        if options.face_upsample:
            same = options.bg_upsampler == "realesrgan"
            face_upsampler = background if same else build_upsampler("realesrgan", **upsample)
        if options.upscale > 1 or options.bg_upsampler != "bicubic":
            log.info("background upsampler: %s", background.name)
        self.compose = ComposeStage(
            size=size, masker=masker, background=background, face_upsampler=face_upsampler,
            upscale=options.upscale, draw_box=options.draw_box, timer=self.timer,
        )  # fmt: skip
        self._info = {
            "mask": masker.name,
            "background": background.name,
            "face_upsampler": None if face_upsampler is None else face_upsampler.name,
        }

    def info(self) -> dict:
        return self._info

    def begin(self, job: BackJob, release: Callable[[int], None]) -> None:
        self.timer.seconds.clear()
        self.job, self.release = job, release
        self.encoder = EncodeStage(job.encode, self.timer)
        self.faces = self.frames_with_face = 0

    def push(self, frame: RestoredFrame) -> None:
        out, records = self.compose(self.job.pool[frame.slot], frame)
        self.release(frame.slot)
        self.encoder(frame.index, out, frame.pts, records)
        self.faces += len(frame.faces)
        self.frames_with_face += bool(frame.faces)

    def end(self) -> dict:
        self.encoder.close()
        return {
            "frames": self.encoder.written,
            "streams": self.encoder.streams,
            "faces": self.faces,
            "frames_with_face": self.frames_with_face,
            "timings": dict(self.timer.seconds),
        }

    def abort(self) -> None:
        encoder = getattr(self, "encoder", None)
        if encoder is not None:
            encoder.close(complete=False)
