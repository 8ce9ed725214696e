"""Stage 1, decode: a video, a folder of frames or one image -> frames in pool slots, in order."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from ..errors import KeepError
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
            if frame.rgb.shape != pool[slot].shape:
                height, width = frame.rgb.shape[:2]
                raise KeepError(
                    f"frame {frame.index} is {width}x{height}, the first frame {reader.width}x{reader.height}; "
                    "videos whose size changes are not supported"
                )
            pool[slot][...] = frame.rgb
        yield frame.index, slot, frame.pts
