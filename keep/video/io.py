"""Video, frame-folder and image input; H.264 / HEVC output with the source's timing, colour and other streams.

Readers yield `Frame(index, rgb (H, W, 3) uint8, pts, planes)` one at a time, so memory never depends on the
video's length: `rgb` is what the networks see, `planes` the frame as decoded, in `reader.colour`'s pixel
format and depth (`keep.video.colour`; views of the decoder's frame where it is already in that format).
Frames come upright, as players show them (a phone's rotation applied), and all at the first frame's size
(frames of another size are scaled to it, as FFmpeg does, and counted). A decode error part-way through a
video ends the stream and is recorded in `reader.stopped`, so the caller restores what decoded and says
where it stopped.
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
from av.sidedata.sidedata import Type

from ..errors import KeepError
from ..image import (  # noqa: F401 (re-exported)
    EXIF_ORIENTATIONS,
    IMAGE_SUFFIXES,
    list_images,
    orient,
    read_image,
    read_upright,
    to_rgb,
    write_image,
)
from .colour import BT601, SRGB, SWSCALE_MATRIX, Colour, rgb_to_ycbcr_matrix, side_data
from .encoding import HEVC, choose_encoding
from .pictures import (
    FIELD_ORDER_CODES,
    FieldFlags,
    decoded_planes,
    frame_from_planes,
    network_view,
    read_colour,
    swscale_keeping,
    tag,
)
from .streams import AHEAD_S, StreamCopier, main_video
from .timeline import Timeline

log = logging.getLogger(__name__)

# What a folder of videos may hold (matched case-insensitively); anything FFmpeg reads works as `-i FILE`.
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".y4m")
VIDEO_SUFFIXES += (".ts", ".mts", ".m2ts", ".dv")  # MPEG-TS (broadcast, AVCHD cameras), DV tape captures

# libx264 presets, fastest to slowest (`--preset`): at the same crf a faster one encodes sooner and compresses less
PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


@dataclass(frozen=True)
class Frame:
    index: int
    rgb: np.ndarray  # (H, W, 3) uint8, upright (as players show it): what the networks see (keep.video.colour)
    pts: int | None  # in the source time base (None for images)
    planes: tuple[np.ndarray, ...] = ()  # the frame as the pipeline holds it, in the reader's `colour.format`


class SizeChanges:
    """Frames whose size differs from the first frame's are scaled to it, as FFmpeg does (a `.ts`
    capture whose resolution changes, a folder with one frame of another size); counted for the summary."""

    def __init__(self, width: int, height: int):
        self.width, self.height = width, height
        self.count = 0
        self.first: str | None = None  # the first change, in words

    def note(self, frame: str, width: int, height: int) -> None:
        if self.first is None:
            self.first = f"{frame} is {width}x{height}"
        self.count += 1

    def message(self) -> str | None:
        """One line for the user, or None when every frame had the first frame's size."""
        if not self.count:
            return None
        return (
            f"{self.count} frames differ in size from the first ({self.first}); "
            f"scaled to the first frame's {self.width}x{self.height}"
        )


# Quarter turns counter-clockwise (np.rot90) and a left-right mirror after them, as 2x2 maps of pixel
# coordinates (x right, y down): what a display matrix may ask for (8 orientations, as EXIF's).
_TURN = np.array([[0, 1], [-1, 0]])
_MIRROR = np.array([[-1, 0], [0, 1]])
ORIENTATIONS = {
    (turns, mirror): np.linalg.matrix_power(_MIRROR, int(mirror)) @ np.linalg.matrix_power(_TURN, turns)
    for turns in range(4)
    for mirror in (False, True)
}


def display_orientation(frame: av.VideoFrame) -> tuple[int, bool]:
    """How to turn a decoded frame upright, as players show it: (quarter turns counter-clockwise, then mirror
    left-right). Phones store portrait video sideways with a display matrix in the container (`ffprobe`'s
    "rotation"); FFmpeg attaches it to every decoded frame as side data."""
    for data in side_data(frame):
        if data.type == Type.DISPLAYMATRIX:
            m = np.frombuffer(bytes(data), dtype=np.int32).astype(np.float64)  # 3x3, a b u / c d v / x y w
            linear = np.array([[m[0], m[3]], [m[1], m[4]]])  # (x, y) stored -> displayed, 16.16 fixed point
            scale = np.abs(linear).max()
            if scale == 0:
                return 0, False
            for orientation, matrix in ORIENTATIONS.items():
                if np.allclose(linear / scale, matrix, atol=1e-3):
                    return orientation
            log.warning("display matrix %s is not a multiple of 90 degrees: frames are read as stored", linear)
    return 0, False


class VideoReader:
    """Decode a video file frame by frame (any codec FFmpeg reads), frames turned upright.

    The first frame is decoded when the reader opens: its display matrix (the rotation a phone records) and
    its size define the upright size every frame is delivered at (`width`, `height`), its colour tags, depth
    and HDR side data the `colour` every frame's planes are held in (`keep.video.pictures.read_colour`).
    """

    kind = "video"

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self._container = av.open(str(self.path))
        except (av.FFmpegError, OSError) as exc:  # in words, without FFmpeg's error number
            reason = getattr(exc, "strerror", None) or str(exc)
            if isinstance(exc, av.InvalidDataError):
                reason = f"not a video FFmpeg can read ({reason.lower()})"
            raise KeepError(f"cannot open video {self.path}: {reason}") from None
        try:
            self._open()
        except BaseException:
            self._container.close()
            raise

    def _open(self) -> None:
        stream = self.stream = main_video(self._container)
        if stream is None:
            raise KeepError(f"{self.path} has no video stream")
        if stream.codec_context is None:
            raise KeepError(
                f"cannot decode {self.path}: this FFmpeg build (PyAV {av.__version__}) has no decoder for its "
                "video codec"
            )
        self.fps: Fraction = stream.average_rate or stream.guessed_rate or Fraction(25)
        self.time_base: Fraction = stream.time_base or Fraction(1, 90000)
        self.num_frames: int | None = stream.frames or None
        self.stopped: str | None = None  # why decoding ended early, if it did
        self.timeline = Timeline(self._container, stream)
        self._decoded = self._decode()
        try:
            self._first = next(self._decoded)
        except StopIteration:
            raise KeepError(f"no frame of {self.path} could be decoded") from None
        except (av.FFmpegError, OSError) as exc:
            raise KeepError(f"cannot decode {self.path}: {exc}") from None
        self.turns, self.mirror = display_orientation(self._first)
        self.colour: Colour = read_colour(self._first, stream)
        self.stored_size = self._first.width, self._first.height
        width, height = self.stored_size
        self.width, self.height = (height, width) if self.turns % 2 else (width, height)
        sar = stream.sample_aspect_ratio
        if not sar or sar == 1:  # unknown or square pixels: nothing to keep
            sar = None
        elif self.turns % 2:  # a pixel w x h stored is h x w upright
            sar = 1 / sar
        self.sample_aspect: Fraction | None = sar
        self.size_changes = SizeChanges(self.width, self.height)

    def _decode(self) -> Iterator[av.VideoFrame]:
        """The video's frames, their timestamps on the output's timeline: every packet of the input, the other
        streams' too, passes through `timeline` (as in the stream copier's demuxer, so that both shift alike)."""
        for packet in self._container.demux():
            self.timeline.place(packet)
            if packet.stream.index == self.stream.index:
                yield from packet.decode()

    def close(self) -> None:
        """Release the file without decoding (after reading the header only)."""
        self._container.close()

    def _upright(self, index: int, frame: av.VideoFrame) -> Frame:
        if (frame.width, frame.height) != self.stored_size:
            shown = (frame.height, frame.width) if self.turns % 2 else (frame.width, frame.height)
            self.size_changes.note(f"frame {index}", *shown)
            frame = frame.reformat(*self.stored_size, interpolation="BICUBIC")  # FFmpeg's scaler, as its CLI does
        planes = decoded_planes(frame, self.colour)
        rgb = orient(network_view(frame, self.colour), self.turns, self.mirror)
        planes = tuple(orient(plane, self.turns, self.mirror, contiguous=False) for plane in planes)
        return Frame(index, rgb, frame.pts, planes)

    def __iter__(self) -> Iterator[Frame]:
        index = 0
        try:
            frame = self._first
            while frame is not None:
                yield self._upright(index, frame)
                index += 1
                frame = next(self._decoded, None)
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
    sample_aspect = None
    turns, mirror = 0, False  # a folder's frames are each turned by their own EXIF orientation
    colour = SRGB  # 8-bit RGB: the frames are what the networks see

    def __init__(self, path: str | Path, *, fps: float = 25.0):
        self.path = Path(path)
        if self.path.is_dir():
            self.files = list_images(self.path)
            if not self.files:
                raise KeepError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder {self.path}")
        else:
            self.files = [self.path]
            self.kind = "image"
        first, orientation = read_upright(self.files[0])  # photos come upright (their EXIF orientation)
        self.height, self.width = first.shape[:2]
        if self.kind == "image":  # the summary's rotation and mirror, as a video's display matrix gives them
            self.turns, self.mirror = EXIF_ORIENTATIONS[orientation]
        self.exif_turned = 0  # frames turned upright by their EXIF orientation
        self.fps = Fraction(fps).limit_denominator(1001)
        self.time_base = 1 / self.fps
        self.num_frames = len(self.files)
        self.stopped: str | None = None
        self.size_changes = SizeChanges(self.width, self.height)

    def __iter__(self) -> Iterator[Frame]:
        for index, file in enumerate(self.files):
            rgb, orientation = read_upright(file)
            self.exif_turned += orientation != 1
            if rgb.shape[:2] != (self.height, self.width):
                self.size_changes.note(f"frame {index} ({file.name})", rgb.shape[1], rgb.shape[0])
                shrink = rgb.shape[0] * rgb.shape[1] > self.height * self.width
                rgb = cv2.resize(
                    rgb, (self.width, self.height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC
                )
            yield Frame(index, rgb, index, (rgb,))

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


def rgb_to_yuv420p(rgb: np.ndarray, matrix: int = BT601) -> np.ndarray:
    """RGB `(H, W, 3)` uint8 (H, W even) -> yuv420p planes `(H * 3 // 2, W)` uint8: Y, then Cb, then Cr.

    Limited range; BT.601 (`matrix`, FFmpeg's value: `keep.video.colour`) as swscale's default conversion that
    `VideoWriter` used before (luma within 1 level of it), or another matrix (BT.709 for HD frames).
    Each chroma sample is the chroma of the mean of its 2x2 block (OpenCV's own I420 conversion takes the
    block's top-left pixel, which aliases colour edges). With OpenCV's threads, several times faster than
    PyAV's RGB frame + swscale at 1080p (docs/inference.md).
    """
    height, width = rgb.shape[:2]
    out = np.empty((height * 3 // 2, width), np.uint8)
    if matrix == BT601:
        cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420, dst=out)  # Y (exact BT.601); its point-sampled chroma is replaced
        rows = (YUV601_CB, YUV601_CR)
    else:
        levels = rgb_to_ycbcr_matrix(Colour("yuv420p", matrix_in_use=matrix)) / [255, 255, 255, 1]
        cv2.transform(rgb, levels[:1].astype(np.float32), dst=out[:height])
        rows = (levels[1:2].astype(np.float32), levels[2:3].astype(np.float32))
    half = cv2.resize(rgb, (width // 2, height // 2), interpolation=cv2.INTER_AREA)  # 2x2 block means
    quarter = height * width // 4
    for k, row in enumerate(rows):
        plane = out[height:].reshape(-1)[k * quarter : (k + 1) * quarter].reshape(height // 2, width // 2)
        cv2.transform(half, row, dst=plane)
    return out


class VideoWriter:
    """Encode frames to H.264 or HEVC (`keep.video.encoding`: libx264 for 8-bit, libx265 for deeper colour;
    `crf`, `preset`) with the source's frame timing, and copy the other streams of `streams_from` (every audio
    track, subtitles the container holds: `keep.video.streams`).

    `write` takes RGB `(H, W, 3)` uint8 or a list of planes of `colour` (`keep.video.colour.Colour`: the
    input's colour, as the pipeline holds its frames; default 8-bit RGB). The output holds `colour.for_output`:
    the input's planes go to the encoder as they are, with the input's tags, HDR side data and field order;
    RGB frames are converted with the matrix players assume for the size. `encoding.fallback` says what the
    output could not keep.

    Timing: the encoder works in the source's time base and every frame keeps its timestamp, as the reader
    gives it (on the output's timeline: `keep.video.timeline`), so a variable-frame-rate video keeps its
    timing and the audio its sync (timestamps rescaled to 1/fps collided and the muxer refused them). A
    missing timestamp, or one not after the previous frame's, becomes the previous one plus one frame.
    `sample_aspect` is the source's pixel aspect ratio, kept so that players show the same picture shape.
    The container follows the file name's suffix (.mp4, .mkv, ...).

    Odd frame sizes (e.g. 175x143) cannot be stored in 4:2:0, so they are encoded in 4:4:4. RGB frames are
    converted to yuv420p by `rgb_to_yuv420p` and x264 encodes several frames at once (frame threads; `threads`
    0 is x264's automatic count; PyAV asks for slice threads by default): at 1080p on 16 cores 21.8 instead of
    39.8 ms per frame (docs/inference.md). `threads=1` encodes each frame in the calling thread. The
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
        sample_aspect: Fraction | None = None,
        crf: int = 18,
        preset: str = "medium",
        streams_from: str | Path | None = None,
        threads: int = 0,
        colour: Colour = SRGB,
    ):
        self.path = Path(path)
        if preset not in PRESETS:
            raise KeepError(f"unknown x264 preset '{preset}'; choose one of {', '.join(PRESETS)}")
        self.colour = colour
        self.encoding = choose_encoding(colour, width, height, crf=crf, preset=preset)
        try:
            self._container = av.open(str(self.path), mode="w")
        except (av.FFmpegError, OSError) as exc:
            raise KeepError(f"cannot write {self.path}: {exc}") from None
        self.streams = None
        try:
            self._add_video(width, height, fps, time_base, sample_aspect, threads)
            if streams_from is not None:
                self.streams = StreamCopier(self._container, streams_from)
        except BaseException:
            self._container.close()
            raise
        self.frames = 0
        self.retimed = 0  # frames whose timestamp was not after the previous frame's
        self._last_pts: int | None = None

    def _add_video(self, width, height, fps, time_base, sample_aspect, threads) -> None:
        encoding, out = self.encoding, self.encoding.colour
        try:
            self.stream = self._container.add_stream(encoding.codec, rate=fps)
        except (ValueError, av.FFmpegError) as exc:
            raise KeepError(
                f"cannot write {self.path}: this FFmpeg build (PyAV {av.__version__}) has no {encoding.codec} "
                f"encoder ({exc}); PyAV's own wheels include it"
            ) from None
        self.stream.width, self.stream.height = width, height
        self.stream.pix_fmt = out.format
        self.stream.options = dict(encoding.options)
        context = self.stream.codec_context
        context.thread_type = "FRAME"  # x264 frame threads (thread count 0: x264's auto)
        context.thread_count = threads
        context.colorspace, context.color_range = out.matrix, out.range
        context.color_primaries, context.color_trc = out.primaries, out.transfer
        if encoding.codec == HEVC and self._container.format.name in ("mp4", "mov"):
            context.codec_tag = "hvc1"  # Apple's players play HEVC in MP4 only under this tag
        self._fields = None
        if out.field_order is not None:  # interlaced: coded as such, each frame flagged with the field order
            context.flags |= av.codec.context.Flags.interlaced_dct | av.codec.context.Flags.interlaced_me
            context.field_order = FIELD_ORDER_CODES[out.field_order]
            self._fields = FieldFlags(out.field_order, out, width, height)
        if time_base is not None:
            context.time_base = time_base
        if sample_aspect is not None:
            context.sample_aspect_ratio = sample_aspect
        self.time_base = time_base or 1 / fps  # frame pts are given in this time base
        self.step = max(1, round(1 / (fps * self.time_base)))  # one frame, in time base units

    @property
    def kept(self) -> list[str]:
        """The input's other streams written too, in words (`keep.video.streams`)."""
        return self.streams.kept if self.streams is not None else []

    @property
    def dropped(self) -> list[str]:
        """The input's other streams not written, each with the reason."""
        return self.streams.dropped if self.streams is not None else []

    def frame(self, image: np.ndarray | list[np.ndarray] | av.VideoFrame) -> av.VideoFrame:
        """The encoder's frame for RGB `(H, W, 3)` uint8 or planes of `self.colour`, in the output's format (a
        frame made before is returned as it is)."""
        if isinstance(image, av.VideoFrame):
            return image
        out = self.encoding.colour
        rgb = image if isinstance(image, np.ndarray) else image[0] if self.colour.is_rgb else None
        if rgb is None:
            frame = frame_from_planes(image, self.colour)
            if self.colour.format != out.format:  # 4:4:4 at an even output size, or the 8-bit fallback
                frame = frame.reformat(format=out.format, **swscale_keeping(out))
        elif out.format == "yuv420p":
            frame = av.VideoFrame.from_ndarray(rgb_to_yuv420p(rgb, out.matrix_in_use), format="yuv420p")
        else:  # 4:4:4 (odd sizes): FFmpeg's scaler converts
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame = frame.reformat(format=out.format, dst_colorspace=SWSCALE_MATRIX[out.matrix_in_use],
                                   dst_color_range="MPEG")  # fmt: skip
        tag(frame, out)
        return frame if self._fields is None else self._fields(frame)

    def write(self, image: np.ndarray | list[np.ndarray] | av.VideoFrame, pts: int | None = None) -> None:
        frame = self.frame(image)
        if pts is None:
            pts = self.frames if self._last_pts is None else self._last_pts + self.step
        elif self._last_pts is not None and pts <= self._last_pts:  # the encoder needs increasing timestamps
            if not self.retimed:
                log.warning("%s: frame %d's time is not after the previous frame's: shown a frame later", self.path,
                            self.frames)  # fmt: skip
            self.retimed += 1
            pts = self._last_pts + self.step  # shown for a frame (one tick later, it would never be)
        self._last_pts = pts
        frame.pts, frame.time_base = pts, self.time_base
        self._container.mux(self.stream.encode(frame))
        self.frames += 1
        if self.streams is not None:
            self.streams.mux_until(float(pts * self.time_base) + AHEAD_S)

    def abort(self) -> None:
        """Close without flushing the encoder (after a failure; the file is incomplete and discarded)."""
        if self.streams is not None:
            self.streams.close()
        try:
            self._container.close()
        except (av.FFmpegError, OSError, ValueError):
            pass

    def close(self) -> None:
        self._container.mux(self.stream.encode(None))
        if self.streams is not None:
            self.streams.finish()
        self._container.close()


def probe(path: str | Path) -> dict:
    """Frame count, fps, duration (s), stored size, display orientation and stream types of a video, by
    decoding it."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        first, frames = None, 0
        for frame in container.decode(stream):
            first, frames = first or frame, frames + 1
        return {
            "frames": frames,
            "fps": stream.average_rate,
            "duration": float(container.duration / av.time_base) if container.duration else None,
            "width": stream.codec_context.width,
            "height": stream.codec_context.height,
            "orientation": display_orientation(first) if first is not None else (0, False),
            "sample_aspect": stream.sample_aspect_ratio,
            "audio": [s.codec_context.name for s in container.streams.audio],
            "subtitles": [s.codec_context.name for s in container.streams.subtitles],
        }
