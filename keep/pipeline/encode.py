"""Stage 5, encode: output frames -> H.264 (source timing, the input's other streams copied) or one image,
plus the optional frame PNGs and per-frame face records. Everything goes to a hidden partial file of the
run's own first; the pipeline moves it into place once the whole video is written, so an interrupted run
never leaves a final-looking file. A write the system refuses (a full disk, a quota) is one error line that
names the output (issue 19)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..image import write_image
from ..video.io import VideoWriter
from .inputs import write_error
from .items import StageTimer


@dataclass
class EncodeJob:
    partial: Path  # where the video / image is written until complete
    output: Path  # where it goes when complete (named in messages)
    kind: str  # video | frames | image
    width: int
    height: int
    fps: Fraction
    time_base: Fraction | None
    sample_aspect: Fraction | None  # the source's pixel aspect ratio (None: square)
    crf: int
    preset: str  # libx264 preset
    streams_from: Path | None  # the input video, whose audio and subtitle tracks are copied
    frames_dir: Path | None  # --save_frames
    faces_log: Path | None  # --save_faces


class EncodeStage:
    def __init__(self, job: EncodeJob, timer: StageTimer):
        self.job = job
        self.timer = timer
        self.written = 0
        self.writer = None
        self.streams = {"kept": [], "not_kept": []}
        with self._writing(job.output):
            if job.kind != "image":
                self.writer = VideoWriter(
                    job.partial, width=job.width, height=job.height, fps=job.fps, time_base=job.time_base,
                    sample_aspect=job.sample_aspect, crf=job.crf, preset=job.preset, streams_from=job.streams_from,
                )  # fmt: skip
                self.streams = {"kept": self.writer.kept, "not_kept": self.writer.dropped}
            if job.frames_dir is not None:
                job.frames_dir.mkdir(parents=True, exist_ok=True)
            self.faces_log = open(job.faces_log, "w") if job.faces_log is not None else None

    @contextmanager
    def _writing(self, path: Path) -> Iterator[None]:
        """An OSError (PyAV's write errors are OSErrors too) becomes the one line a user reads."""
        try:
            yield
        except OSError as exc:
            raise write_error(path, exc) from None

    def __call__(self, index: int, rgb: np.ndarray, pts: int | None, records: list[dict]) -> None:
        with self.timer("encode"), self._writing(self.job.output):
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
        with self.timer("encode"), self._writing(self.job.output):
            try:
                if self.faces_log is not None:
                    self.faces_log.close()
            finally:
                self.faces_log = None
                writer, self.writer = self.writer, None
                if writer is not None:
                    if complete and self.written:
                        try:
                            writer.close()
                        except BaseException:
                            writer.abort()
                            raise
                    else:
                        writer.abort()
