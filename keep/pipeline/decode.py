"""Stage 1, decode: a video, a folder of frames or one image -> frames in pool slots, in order.

The readers deliver every frame upright and at the first frame's size (`keep.video.io`), the size the
pool's slots were made for."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from ..video.io import ImageFolderReader, VideoReader
from .items import FramePool, StageTimer


def decode(
    reader: VideoReader | ImageFolderReader, pool: FramePool, acquire: Callable[[], int], timer: StageTimer
) -> Iterator[tuple[int, int, int | None]]:
    """Yield `(index, slot, pts)` for every frame, its pixels written into `pool[slot]`.

    acquire: returns a free slot, waiting for one when all are in use (the pipeline's back-pressure).
    """
    frames = iter(reader)
    while True:
        with timer("decode"):
            frame = next(frames, None)
        if frame is None:
            return
        slot = acquire()
        with timer("decode"):
            pool[slot][...] = frame.rgb
        yield frame.index, slot, frame.pts
