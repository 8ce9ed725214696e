"""What the restored video is encoded with: the codec, pixel format, colour tags, HDR side data and field order
of the output, chosen from the input's `Colour` (docs/inference.md, "Colour").

- 8-bit input: H.264 (libx264), 4:2:0 (4:4:4 at odd sizes), as before.
- Deeper input (10-bit phones, HLG and PQ HDR): HEVC Main 10 (libx265), 4:2:0 10-bit, with the input's
  transfer, primaries, matrix and range and its mastering-display and content-light SEI: what phones record
  and what HDR televisions, phones and browsers decode in hardware (H.264 High 10 has hardware decoders on
  almost none of them). In MP4 the track is tagged `hvc1`, which Apple's players require.
- Fallbacks, each a warning line and the summary's `colour.fallback`: no libx265 in this FFmpeg, or interlaced
  10-bit input (x265 codes interlaced video as separate field pictures, which FFmpeg's wrapper does not
  feed): H.264 High 10 (libx264), which carries the same tags and HDR SEI; no 10-bit encoder at all: 8 bits.
  Per-scene HDR metadata (HDR10+, Dolby Vision's RPU) is not written: the output keeps the base layer's
  static metadata, and the line says what was dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import av

from .colour import Colour

H264, HEVC = "libx264", "libx265"


@dataclass
class Encoding:
    codec: str
    colour: Colour  # what the encoded stream holds: its pixel format and tags
    options: dict[str, str] = field(default_factory=dict)
    fallback: str | None = None  # why the output keeps less than the input could have (one line)


def _formats(codec: str) -> set[str]:
    if codec not in av.codecs_available:
        return set()
    return {f.name for f in av.codec.Codec(codec, "w").video_formats or ()}


def choose_encoding(colour: Colour, width: int, height: int, *, crf: int, preset: str) -> Encoding:
    """The encoder for frames of `colour` written at `width` x `height` (`colour.for_output` gives the tags)."""
    encoding = _encoding(colour.for_output(width, height), crf, preset)
    if colour.hdr and colour.hdr.dynamic:  # per-scene metadata: no encoder here writes it from frames
        lost = f"its {' and '.join(colour.hdr.dynamic)} metadata is not written (the static HDR metadata is)"
        encoding.fallback = "; ".join(filter(None, (encoding.fallback, lost)))
    return encoding


def _encoding(out: Colour, crf: int, preset: str) -> Encoding:
    options = {"crf": str(crf), "preset": preset}
    if out.bits == 8:
        return Encoding(H264, out, options)
    if out.format in _formats(HEVC) and out.field_order is None:
        params = ["log-level=error", *(out.hdr.x265_params() if out.hdr else [])]
        return Encoding(HEVC, out, options | {"x265-params": ":".join(params)})
    if out.format in _formats(H264):
        why = "interlaced 10-bit video" if out.field_order else f"this FFmpeg has no {HEVC} encoder"
        options = options | ({"x264-params": ":".join(_x264_hdr(out))} if out.hdr else {})
        return Encoding(H264, out, options, f"{why}: written as H.264 High 10, which few hardware players decode")
    eight = replace(out, format=out.format.removesuffix("10le"))
    return Encoding(H264, eight, options, "this FFmpeg has no 10-bit encoder: written in 8 bits")


def _x264_hdr(colour: Colour) -> list[str]:
    """x264's spelling of x265's HDR parameters (`mastering-display`, `cll`)."""
    spelling = {"master-display": "mastering-display", "max-cll": "cll"}
    return [spelling[p.split("=")[0]] + "=" + p.split("=", 1)[1] for p in colour.hdr.x265_params()]
