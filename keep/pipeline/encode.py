"""Stage 5, encode: output frames -> H.264 or HEVC (the input's colour, source timing, the input's other streams
copied: `keep.video.io.VideoWriter`) or one image, plus the optional frame PNGs and per-frame face records.
Everything goes to a hidden partial file of the run's own first; the pipeline moves it into place once the
whole video is written, so an interrupted run never leaves a final-looking file. A write the system refuses
(a full disk, a quota) is one error line that names the output."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from ..image import write_image
from ..paths import write_error
from ..video.io import VideoWriter
from ..video.pictures import rgb_of_planes
from .items import Composed, Job
from .stage import Slots, Stage


@dataclass
class EncodeJob:
    partial: Path  # where the video / image is written until complete
    output: Path  # where it goes when complete (named in messages; the pipeline moves every file into place)
    kind: str  # video | frames | image
    width: int
    height: int
    fps: Fraction
    time_base: Fraction | None
    sample_aspect: Fraction | None  # the source's pixel aspect ratio (None: square)
    crf: int
    preset: str  # libx264 preset
    streams_from: Path | None  # the input video, whose audio and subtitle tracks are copied
    frames_dir: Path | None  # --save_frames: the partial folder of the frames
    faces_log: Path | None  # --save_faces: the partial file of the face records


@dataclass(frozen=True)
class EncodeSpec:
    """The encode stage has no settings of its own: what it writes comes with each input (`EncodeJob`)."""

    def build(self) -> EncodeStage:
        return EncodeStage()


class EncodeStage(Stage):
    """`Composed` frames in, written in order; nothing out. `finish` completes the file."""

    def start(self, job: Job, slots: Slots) -> None:
        encode = self.job = job.encode
        self.colour = job.pool.colour  # the frames' (the input's) colour
        self.written = 0
        self.writer = self.faces_log = None
        self.streams = {"kept": [], "not_kept": []}
        self.colour_stats = {"input": self.colour.describe(), "output": self.colour.describe(), "fallback": None}
        with self._writing(encode.output):
            if encode.kind != "image":
                # The writer copies the input's other streams (audio, subtitles) from a demuxer of its own, at
                # the encoder's pace: the decoder's reads only the video stream, in another worker.
                self.writer = VideoWriter(
                    encode.partial, width=encode.width, height=encode.height, fps=encode.fps,
                    time_base=encode.time_base, sample_aspect=encode.sample_aspect, crf=encode.crf,
                    preset=encode.preset, streams_from=encode.streams_from, colour=self.colour,
                )  # fmt: skip
                self.streams = {"kept": self.writer.kept, "not_kept": self.writer.dropped}
                encoding = self.writer.encoding
                self.colour_stats |= {"output": encoding.colour.describe() | {"codec": encoding.codec},
                                      "fallback": encoding.fallback}  # fmt: skip
            if encode.frames_dir is not None:
                encode.frames_dir.mkdir(parents=True, exist_ok=True)
            self.faces_log = open(encode.faces_log, "w") if encode.faces_log is not None else None

    @contextmanager
    def _writing(self, path: Path) -> Iterator[None]:
        """An OSError (PyAV's write errors are OSErrors too) becomes the one line a user reads."""
        try:
            yield
        except OSError as exc:
            raise write_error(path, exc) from None

    def push(self, frame: Composed) -> list:
        with self.timer("encode"), self._writing(self.job.output):
            if self.writer is not None:
                self.writer.write(frame.planes, frame.pts)
            else:
                write_image(self.job.partial, frame.planes[0])  # an image's frames are RGB
            if self.job.frames_dir is not None:  # as a player shows the frame; 16-bit PNG for deeper colour
                write_image(self.job.frames_dir / f"{frame.index:06d}.png", rgb_of_planes(frame.planes, self.colour))
            if self.faces_log is not None:
                self.faces_log.write(json.dumps({"frame": frame.index, "faces": frame.records}) + "\n")
            self.written += 1
        return []

    def finish(self) -> list:
        self._close(complete=True)
        return []

    def abort(self) -> None:
        self._close(complete=False)

    def stats(self) -> dict:
        return {"frames": self.written, "streams": self.streams, "colour": self.colour_stats}

    def _close(self, *, complete: bool) -> None:
        """Flush and close (`complete=False` after a failure: close without flushing the encoder)."""
        job = getattr(self, "job", None)
        if job is None:
            return
        with self.timer("encode"), self._writing(job.output):
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
