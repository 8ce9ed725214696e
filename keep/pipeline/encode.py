"""Stage 5, encode: output frames -> H.264 (source timing, audio copied) or one image, plus the optional
frame PNGs and per-frame face records. Everything goes to a hidden partial file first; the pipeline
renames it once the whole video is written, so an interrupted run never leaves a final-looking file."""

from __future__ import annotations

import json
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..image import write_image
from ..video.io import VideoWriter
from .items import StageTimer


@dataclass
class EncodeJob:
    partial: Path  # where the video / image is written until complete
    kind: str  # video | frames | image
    width: int
    height: int
    fps: Fraction
    time_base: Fraction | None
    crf: int
    preset: str  # libx264 preset
    audio_source: Path | None
    frames_dir: Path | None  # --save_frames
    faces_log: Path | None  # --save_faces


class EncodeStage:
    def __init__(self, job: EncodeJob, timer: StageTimer):
        self.job = job
        self.timer = timer
        self.written = 0
        self.writer = None
        if job.kind != "image":
            self.writer = VideoWriter(
                job.partial, width=job.width, height=job.height, fps=job.fps, time_base=job.time_base,
                crf=job.crf, preset=job.preset, audio_source=job.audio_source,
            )  # fmt: skip
        if job.frames_dir is not None:
            job.frames_dir.mkdir(parents=True, exist_ok=True)
        self.faces_log = open(job.faces_log, "w") if job.faces_log is not None else None

    def __call__(self, index: int, rgb: np.ndarray, pts: int | None, records: list[dict]) -> None:
        with self.timer("encode"):
            if self.writer is not None:
                self.writer.write(rgb, pts)
            else:
                write_image(self.job.partial, rgb)
            if self.job.frames_dir is not None:
                write_image(self.job.frames_dir / f"{index:06d}.png", rgb)
            if self.faces_log is not None:
                self.faces_log.write(json.dumps({"frame": index, "faces": records}) + "\n")
            self.written += 1

    def close(self, *, complete: bool = True) -> None:
        """Flush and close (`complete=False` after a failure: close without flushing the encoder)."""
        with self.timer("encode"):
            if self.faces_log is not None:
                self.faces_log.close()
                self.faces_log = None
            if self.writer is not None:
                if complete and self.written:
                    self.writer.close()
                else:
                    self.writer.abort()
                self.writer = None
