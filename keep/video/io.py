"""Video, frame-folder and image input; H.264 output with the source audio copied (issue #3).

Readers yield `Frame(index, rgb (H, W, 3) uint8, pts)` one at a time, so memory never depends on the
video's length. A decode error part-way through a video ends the stream and is recorded in
`reader.stopped`, so the caller restores what decoded and says where it stopped.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from ..errors import KeepError
from ..image import IMAGE_SUFFIXES, list_images, read_image, to_rgb, write_image  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)

# What a folder of videos may hold (matched case-insensitively); anything FFmpeg reads works as `-i FILE`.
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".y4m")

# libx264 presets, fastest to slowest (`--preset`): at the same crf a faster one encodes sooner and compresses less
PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


@dataclass(frozen=True)
class Frame:
    index: int
    rgb: np.ndarray  # (H, W, 3) uint8
    pts: int | None  # in the source time base (None for images)


class VideoReader:
    """Decode a video file frame by frame (any codec FFmpeg reads)."""

    kind = "video"

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self._container = av.open(str(self.path))
        except (av.FFmpegError, OSError) as exc:
            raise KeepError(f"cannot open video {self.path}: {exc}") from None
        if not self._container.streams.video:
            self._container.close()
            raise KeepError(f"{self.path} has no video stream")
        stream = self._container.streams.video[0]
        self.stream = stream
        self.fps: Fraction = stream.average_rate or stream.guessed_rate or Fraction(25)
        self.time_base: Fraction = stream.time_base or Fraction(1, 90000)
        self.width, self.height = stream.codec_context.width, stream.codec_context.height
        self.num_frames: int | None = stream.frames or None
        self.has_audio = bool(self._container.streams.audio)
        self.stopped: str | None = None  # why decoding ended early, if it did

    def close(self) -> None:
        """Release the file without decoding (after reading the header only)."""
        self._container.close()

    def __iter__(self) -> Iterator[Frame]:
        index = 0
        try:
            for frame in self._container.decode(self.stream):
                yield Frame(index, to_rgb(frame.to_ndarray(format="rgb24")), frame.pts)
                index += 1
        except (av.FFmpegError, OSError) as exc:
            self.stopped = f"decoding stopped after frame {index}: {exc}"
            log.warning("%s: %s", self.path, self.stopped)
        finally:
            self._container.close()
        if self.num_frames and index < self.num_frames and self.stopped is None:
            self.stopped = f"decoded {index} of the {self.num_frames} frames the header announces"


class ImageFolderReader:
    """Frames from a folder of images (sorted by name) or from one image."""

    kind = "frames"

    def __init__(self, path: str | Path, *, fps: float = 25.0):
        self.path = Path(path)
        if self.path.is_dir():
            self.files = list_images(self.path)
            if not self.files:
                raise KeepError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder {self.path}")
        else:
            self.files = [self.path]
            self.kind = "image"
        first = read_image(self.files[0])
        self.height, self.width = first.shape[:2]
        self.fps = Fraction(fps).limit_denominator(1001)
        self.time_base = 1 / self.fps
        self.num_frames = len(self.files)
        self.has_audio = False
        self.stopped: str | None = None

    def __iter__(self) -> Iterator[Frame]:
        for index, file in enumerate(self.files):
            rgb = read_image(file)
            if rgb.shape[:2] != (self.height, self.width):
                raise KeepError(f"{file} is {rgb.shape[1]}x{rgb.shape[0]}, the first frame {self.width}x{self.height}")
            yield Frame(index, rgb, index)

    def close(self) -> None:
        pass


def open_input(path: str | Path, *, fps: float = 25.0) -> VideoReader | ImageFolderReader:
    """A reader for a video file, a folder of frames or one image; KeepError if it is none of these."""
    path = Path(path)
    if not path.exists():
        raise KeepError(f"input {path} does not exist")
    if path.is_dir() or path.suffix.lower() in IMAGE_SUFFIXES:
        return ImageFolderReader(path, fps=fps)
    return VideoReader(path)


# BT.601 limited range (swscale's default for untagged RGB -> YUV, and what our reader assumes back):
# rows (R, G, B, offset) of Cb and Cr in 8-bit levels
YUV601_CB = np.array([[-0.1482229, -0.2909928, 0.4392157, 128.0]], np.float32)
YUV601_CR = np.array([[0.4392157, -0.3677883, -0.0714274, 128.0]], np.float32)


def rgb_to_yuv420p(rgb: np.ndarray) -> np.ndarray:
    """RGB `(H, W, 3)` uint8 (H, W even) -> yuv420p planes `(H * 3 // 2, W)` uint8: Y, then Cb, then Cr.

    BT.601 limited range, as swscale's default conversion that `VideoWriter` used until issue #11 (luma
    within 1 level of it); each chroma sample is the BT.601 chroma of the mean of its 2x2 block (OpenCV's own
    I420 conversion takes the block's top-left pixel, which aliases colour edges). With OpenCV's threads,
    several times faster than PyAV's RGB frame + swscale at 1080p (docs/inference.md).
    """
    height, width = rgb.shape[:2]
    out = np.empty((height * 3 // 2, width), np.uint8)
    cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420, dst=out)  # Y (exact BT.601); its point-sampled chroma is replaced
    half = cv2.resize(rgb, (width // 2, height // 2), interpolation=cv2.INTER_AREA)  # 2x2 block means
    quarter = height * width // 4
    for k, row in enumerate((YUV601_CB, YUV601_CR)):
        plane = out[height:].reshape(-1)[k * quarter : (k + 1) * quarter].reshape(height // 2, width // 2)
        cv2.transform(half, row, dst=plane)
    return out


class VideoWriter:
    """Encode RGB frames to H.264 (libx264, `crf`, `preset`), keeping the source frame rate and timing, and
    copying the source's first audio stream packet by packet (interleaved as the video advances).

    Odd frame sizes (e.g. 175x143) cannot be stored in 4:2:0, so they are encoded in 4:4:4. Frames are
    converted to yuv420p by `rgb_to_yuv420p` and x264 encodes several frames at once (frame threads; `threads`
    0 is x264's automatic count; PyAV asks for slice threads by default): at 1080p on 16 cores 21.8 instead of
    39.8 ms per frame (issue #11, docs/inference.md). `threads=1` encodes each frame in the calling thread. The
    video pipeline keeps the automatic count also when the network has the CPU cores (2 cores, 200 frames: 2.7
    to 5.2 s faster than one thread, measured in docs/inference.md).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        width: int,
        height: int,
        fps: Fraction,
        time_base: Fraction | None = None,
        crf: int = 18,
        preset: str = "medium",
        audio_source: str | Path | None = None,
        threads: int = 0,
    ):
        self.path = Path(path)
        try:
            self._container = av.open(str(self.path), mode="w")
        except (av.FFmpegError, OSError) as exc:
            raise KeepError(f"cannot write {self.path}: {exc}") from None
        self.stream = self._container.add_stream("libx264", rate=fps)
        self.stream.width, self.stream.height = width, height
        self.stream.pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
        if preset not in PRESETS:
            raise KeepError(f"unknown x264 preset '{preset}'; choose one of {', '.join(PRESETS)}")
        self.stream.options = {"crf": str(crf), "preset": preset}
        self.stream.codec_context.thread_type = "FRAME"  # x264 frame threads (thread count 0: x264's auto)
        self.stream.codec_context.thread_count = threads
        self.source_time_base = time_base  # frame pts are given in this time base (None: frame index)
        self.frames = 0
        self._audio_in = None
        self._audio_packets: Iterator | None = None
        self._pending = None
        if audio_source is not None:
            self._open_audio(audio_source)

    def _open_audio(self, source: str | Path) -> None:
        try:
            audio_in = av.open(str(source))
        except (av.FFmpegError, OSError):
            return
        if not audio_in.streams.audio:
            audio_in.close()
            return
        in_stream = audio_in.streams.audio[0]
        try:
            self._audio_out = self._container.add_stream_from_template(in_stream)
        except (ValueError, av.FFmpegError) as exc:  # a codec the mp4 muxer cannot carry
            log.warning("audio stream not copied: %s", exc)
            audio_in.close()
            return
        self._audio_in, self._audio_stream = audio_in, in_stream
        self._audio_packets = iter(audio_in.demux(in_stream))

    def _mux_audio_until(self, seconds: float | None) -> None:
        """Copy audio packets whose time is before `seconds` (all of them when None)."""
        if self._audio_packets is None:
            return
        while True:
            packet = self._pending
            if packet is None:
                try:
                    packet = next(self._audio_packets)
                except (StopIteration, av.FFmpegError):
                    self._audio_packets = None
                    return
            if packet.dts is None:  # the demuxer's final flush packet
                self._pending = None
                continue
            if seconds is not None and float(packet.pts * packet.time_base) > seconds:
                self._pending = packet
                return
            self._pending = None
            packet.stream = self._audio_out
            self._container.mux(packet)

    def write(self, rgb: np.ndarray, pts: int | None = None) -> None:
        if self.stream.pix_fmt == "yuv420p":
            frame = av.VideoFrame.from_ndarray(rgb_to_yuv420p(rgb), format="yuv420p")
        else:  # 4:4:4 (odd sizes): PyAV converts
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        if pts is None or self.source_time_base is None:
            frame.pts, frame.time_base = self.frames, 1 / self.stream.average_rate
        else:  # PyAV rescales to the encoder's time base, so the source timing is kept
            frame.pts, frame.time_base = pts, self.source_time_base
        seconds = float(frame.pts * frame.time_base)
        self._container.mux(self.stream.encode(frame))
        self.frames += 1
        self._mux_audio_until(seconds + 0.5)

    def abort(self) -> None:
        """Close without flushing the encoder (after a failure; the file is incomplete and discarded)."""
        for container in (self._container, self._audio_in):
            try:
                if container is not None:
                    container.close()
            except (av.FFmpegError, OSError, ValueError):
                pass

    def close(self) -> None:
        self._container.mux(self.stream.encode(None))
        self._mux_audio_until(None)
        self._container.close()
        if self._audio_in is not None:
            self._audio_in.close()


def probe(path: str | Path) -> dict:
    """Frame count, fps, duration (s), size and stream types of a video, by decoding it."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        return {
            "frames": frames,
            "fps": stream.average_rate,
            "duration": float(container.duration / av.time_base) if container.duration else None,
            "width": stream.codec_context.width,
            "height": stream.codec_context.height,
            "audio": [s.codec_context.name for s in container.streams.audio],
        }
