"""Stage 1, decode: a video, a folder of frames or one image -> frames in pool slots, in order.

The readers deliver every frame upright and at the first frame's size (`keep.video.io`), the size the
pool's slots were made for, both as the networks see it and as decoded (in the input's pixel format and
depth: `keep.video.colour`). The decode stage is the pipeline's source: `frames()` reads the input.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from ..video.io import Frame, open_input
from .items import FrameRef, Job
from .stage import Slots, Stage


@dataclass(frozen=True)
class DecodeSpec:
    """The decode stage has no settings: what it reads comes with each input (`Job`)."""

    def build(self) -> DecodeStage:
        return DecodeStage()


class DecodeStage(Stage):
    """The reader's frames in; `FrameRef`s out, one per frame, its pixels written into a free slot."""

    def start(self, job: Job, slots: Slots) -> None:
        # The main process opened the input for its header (the frame pool's size) and hands that reader over
        # where this stage runs in the same process. A decode process opens the file again: an open file
        # cannot be sent to another process.
        self.reader = job.reader if job.reader is not None else open_input(job.source, fps=job.settings.fps)
        self.pool, self.acquire = job.pool, slots.acquire

    def frames(self) -> Iterator[Frame]:
        frames = iter(self.reader)
        while True:
            with self.timer("decode"):
                frame = next(frames, None)
            if frame is None:
                return
            yield frame

    def push(self, frame: Frame) -> list[FrameRef]:
        slot = self.acquire()  # waits for a free slot when every one is in use
        with self.timer("decode"):
            self.pool[slot][...] = frame.rgb
            if not self.pool.colour.is_rgb:
                for plane, decoded in zip(self.pool.planes(slot), frame.planes, strict=True):
                    plane[...] = decoded
        return [FrameRef(frame.index, slot, frame.pts)]

    def stats(self) -> dict:
        changes, timeline = self.reader.size_changes, getattr(self.reader, "timeline", None)
        return {
            "stopped": self.reader.stopped, "resized_frames": changes.count, "resized": changes.message(),
            "exif_turned": getattr(self.reader, "exif_turned", 0),  # photos turned by their EXIF orientation
            **(timeline.stats() if timeline is not None else {"start_time": 0.0, "timestamp_jumps": 0}),
        }  # fmt: skip

    def abort(self) -> None:
        reader = getattr(self, "reader", None)
        if reader is not None:
            reader.close()
