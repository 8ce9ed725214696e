"""PyAV frames <-> the pipeline's planes: what a decoded frame's colour is (`read_colour`), its planes in the
pipeline's pixel format (`decoded_planes`), the networks' view of it (`network_view`), and an encoder's frame
made from planes (`frame_from_planes`, with interlaced frames flagged as their field order says).

Frames the pipeline holds are planes of `Colour.format` (`keep.video.colour`): the decoded frame itself
when it is already 4:2:0 at an even size (8 or 10 bits: nothing is converted), else converted once by
FFmpeg's scaler to that format with the same matrix and range (4:2:2 and 4:4:4 chroma to 4:2:0, 12 bits to
10, RGB-coded video to Y'CbCr with the matrix players assume for its size), so that the background the
encoder receives is the decoded input itself.
"""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np

from .colour import (
    BT709,
    SWSCALE_MATRIX,
    UNSPECIFIED,
    Colour,
    HdrMetadata,
    assumed_matrix,
    view_from_signal,
)

FIELD_FLAGS = {"tt": "tff", "bb": "bff"}  # the field order -> FFmpeg's setfield filter mode
FIELD_ORDER_CODES = {"tt": 2, "bb": 3}  # AVFieldOrder: top coded and shown first, bottom first


def _select(frame: av.VideoFrame, expression: str) -> bool:
    """Whether FFmpeg's `select` filter passes `frame` for `expression` (it sees what PyAV does not expose)."""
    graph = av.filter.Graph()
    size = dict(width=frame.width, height=frame.height)
    source = graph.add_buffer(**size, format=frame.format.name, time_base=Fraction(1, 25))
    chosen = graph.add("select", expression)
    sink = graph.add("buffersink")
    source.link_to(chosen)
    chosen.link_to(sink)
    graph.configure()
    graph.push(frame)
    graph.push(None)
    try:
        graph.pull()
        return True
    except (av.error.EOFError, av.error.BlockingIOError):
        return False


def field_order(frame: av.VideoFrame) -> str | None:
    """ "tt" or "bb" for an interlaced frame (the decoder's verdict, which players follow; the container's
    field-order tag is not always there, MP4 has none), None for a progressive one."""
    if not frame.interlaced_frame:
        return None
    return "tt" if _select(frame, "eq(interlace_type\\,TOPFIRST)") else "bb"


def pipeline_format(decoded: av.VideoFormat, width: int, height: int) -> str:
    """The pixel format the pipeline holds frames of this input in: 4:2:0 (4:4:4 at odd sizes, which 4:2:0
    cannot hold), 8 bits, or 10 for deeper input."""
    deep = max(c.bits for c in decoded.components) > 8
    odd = width % 2 or height % 2
    return ("yuv444p" if odd else "yuv420p") + ("10le" if deep else "")


def _is_rgb(decoded: av.VideoFormat, matrix: int) -> bool:
    return decoded.is_rgb or decoded.has_palette or matrix == 0


def _tag(frame: av.VideoFrame, context, name: str, unknown: int) -> int:
    value = getattr(frame, name)
    return value if value != unknown else (getattr(context, name, unknown) or unknown)


def read_colour(frame: av.VideoFrame, stream: av.video.stream.VideoStream) -> Colour:
    """The colour of a video, from its first decoded frame (the stream's tags where the frame has none)."""
    context = stream.codec_context
    matrix = _tag(frame, context, "colorspace", UNSPECIFIED)
    fmt = pipeline_format(frame.format, frame.width, frame.height)
    common = dict(field_order=field_order(frame), hdr=HdrMetadata.from_frame(frame), source=frame.format.name)
    if _is_rgb(frame.format, matrix):  # RGB-coded video: Y'CbCr of the matrix players assume for its size
        in_use = assumed_matrix(frame.width, frame.height)
        tag = BT709 if in_use == BT709 else UNSPECIFIED
        return Colour(fmt, tag, 1, tag, tag, in_use, **common)
    value_range = 2 if frame.format.name.startswith("yuvj") else _tag(frame, context, "color_range", 0)
    primaries = _tag(frame, context, "color_primaries", UNSPECIFIED)
    transfer = _tag(frame, context, "color_trc", UNSPECIFIED)
    in_use = matrix if matrix in SWSCALE_MATRIX else assumed_matrix(frame.width, frame.height)
    return Colour(fmt, matrix, value_range, primaries, transfer, in_use, **common)


def swscale_keeping(colour: Colour) -> dict:
    """FFmpeg scaler arguments that keep `colour`'s matrix and range."""
    matrix = SWSCALE_MATRIX[colour.matrix_in_use]
    value_range = "JPEG" if colour.full_range else "MPEG"
    return dict(src_colorspace=matrix, dst_colorspace=matrix, src_color_range=value_range, dst_color_range=value_range)


def plane_arrays(frame: av.VideoFrame, dtype: type) -> list[np.ndarray]:
    """Views `(h, w)` of a planar frame's planes (no copy; the line padding cut off)."""
    arrays = []
    for plane in frame.planes:
        lines = np.frombuffer(plane, dtype).reshape(plane.height, -1)
        arrays.append(lines[:, : plane.width])
    return arrays


def decoded_planes(frame: av.VideoFrame, colour: Colour) -> list[np.ndarray]:
    """A decoded frame's planes in `colour.format` (views of the frame where no conversion is needed)."""
    name = frame.format.name.replace("yuvj", "yuv")
    if name == colour.format:
        return plane_arrays(frame, colour.dtype)
    if len(frame.format.components) == 1 and not frame.format.has_palette:  # gray: neutral chroma
        luma = plane_arrays(frame.reformat(format="gray10le" if colour.bits > 8 else "gray"), colour.dtype)[0]
        height, width = colour.plane_shapes(*luma.shape)[1]
        half = np.full((height, width), 1 << (colour.bits - 1), colour.dtype)
        return [luma, half, half.copy()]
    if _is_rgb(frame.format, frame.colorspace):
        matrix = SWSCALE_MATRIX[colour.matrix_in_use]
        converted = frame.reformat(format=colour.format, dst_colorspace=matrix, dst_color_range="MPEG")
    else:
        converted = frame.reformat(format=colour.format, **swscale_keeping(colour))
    return plane_arrays(converted, colour.dtype)


def network_view(frame: av.VideoFrame, colour: Colour) -> np.ndarray:
    """The 8-bit RGB the networks see of a decoded frame `(H, W, 3)` (stored orientation): its R'G'B' by FFmpeg's
    scaler with the input's own matrix and range; for HDR and BT.2020 at 16 bits, then
    `keep.video.colour.view_from_signal`."""
    if _is_rgb(frame.format, frame.colorspace):
        return frame.to_ndarray(format="rgb24")
    source = swscale_keeping(colour)
    rgb = frame.reformat(
        format="rgb48le" if colour.linear_view else "rgb24", src_colorspace=source["src_colorspace"],
        src_color_range=source["src_color_range"], dst_color_range="JPEG",
    ).to_ndarray()  # fmt: skip
    return view_from_signal(rgb, colour) if colour.linear_view else rgb


def frame_from_planes(planes: list[np.ndarray], colour: Colour) -> av.VideoFrame:
    """An encoder's frame holding `planes` (copied), tagged with `colour`."""
    height, width = planes[0].shape[:2]
    frame = av.VideoFrame(width, height, colour.format)
    for target, source in zip(plane_arrays(frame, colour.dtype), planes, strict=True):
        target[...] = source
    return tag(frame, colour)


def tag(frame: av.VideoFrame, colour: Colour) -> av.VideoFrame:
    """`frame` with `colour`'s matrix, range, primaries and transfer tags (what the encoder writes)."""
    frame.colorspace, frame.color_range = colour.matrix, colour.range
    frame.color_primaries, frame.color_trc = colour.primaries, colour.transfer
    return frame


def rgb_of_planes(planes: list[np.ndarray], colour: Colour) -> np.ndarray:
    """What a player shows of `planes`: RGB `(H, W, 3)`, uint8 (uint16 for deeper colour: `--save_frames`)."""
    if colour.is_rgb:
        return planes[0]
    frame = frame_from_planes(planes, colour)
    source = swscale_keeping(colour)
    deep = colour.bits > 8
    rgb = frame.reformat(
        format="rgb48le" if deep else "rgb24", src_colorspace=source["src_colorspace"],
        src_color_range=source["src_color_range"], dst_color_range="JPEG",
    )  # fmt: skip
    return rgb.to_ndarray()


class FieldFlags:
    """Marks frames interlaced with a field order (FFmpeg's `setfield` filter; PyAV cannot set the flags),
    so that the encoder codes them as interlaced, top or bottom field first."""

    def __init__(self, order: str, colour: Colour, width: int, height: int):
        self.graph = av.filter.Graph()
        source = self.graph.add_buffer(width=width, height=height, format=colour.format, time_base=Fraction(1, 90000))
        flags = self.graph.add("setfield", FIELD_FLAGS[order])
        sink = self.graph.add("buffersink")
        source.link_to(flags)
        flags.link_to(sink)
        self.graph.configure()

    def __call__(self, frame: av.VideoFrame) -> av.VideoFrame:
        self.graph.push(frame)
        flagged = self.graph.pull()
        for name in ("colorspace", "color_range", "color_primaries", "color_trc"):
            setattr(flagged, name, getattr(frame, name))
        return flagged
