"""Test clips, generated with PyAV: the sample's frames or noise, and clips as phones and cameras make them
(issue 19): stored sideways with a display matrix, variable frame rate, several audio tracks and a subtitle
track, a pixel aspect ratio, a capture whose frame size changes mid-stream, a video codec no decoder knows;
colour-tagged, full-range, 10-bit HDR (HLG, PQ, with their side data) and interlaced video.

    write_clip(path, frames, times=..., rotation=(-90, False), audio=[("aac", "eng"), ("pcm_u8", "fra")])
    write_clip(path, frames, codec="libx265", colour=HLG, options={"x265-params": HDR_PARAMS})
    player_frames(path)   # every frame's RGB as a player shows it (the tags the file carries)
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "assets" / "carphone_sample.mp4"
AUDIO_RATE = 16000

# Colour tags (FFmpeg's values) of the clips made here: matrix, range, primaries, transfer, pixel format
BT709_HD = {"colorspace": 1, "color_range": 1, "color_primaries": 1, "color_trc": 1, "pix_fmt": "yuv420p"}
FULL_RANGE = {"colorspace": 5, "color_range": 2, "color_primaries": 5, "color_trc": 6, "pix_fmt": "yuv420p"}
HLG = {"colorspace": 9, "color_range": 1, "color_primaries": 9, "color_trc": 18, "pix_fmt": "yuv420p10le"}
PQ = HLG | {"color_trc": 16}
# x265's HDR side data: a P3 mastering display of 0.0001-1000 cd/m2, MaxCLL 1000, MaxFALL 400 (ST 2086, CTA-861.3)
HDR_PARAMS = (
    "log-level=error:master-display=G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)L(10000000,1)"
    ":max-cll=1000,400"
)
SCALER_MATRIX = {1: "ITU709", 5: "ITU601", 6: "ITU601", 9: "BT2020"}


def sample_frames(count: int, start: int = 0) -> list[np.ndarray]:
    """`count` frames of the sample clip from frame `start` (looped past its 75)."""
    with av.open(str(SAMPLE)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    return [frames[i % len(frames)] for i in range(start, start + count)]


def noise_frames(count: int, height: int = 48, width: int = 64, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(count)]


def stored(upright: np.ndarray, turns: int, mirror: bool) -> np.ndarray:
    """The frame a camera stores for an `upright` picture that players turn by (turns x 90 degrees
    counter-clockwise, then a left-right mirror): the inverse of `keep.video.io.orient`."""
    if mirror:
        upright = upright[:, ::-1]
    return np.ascontiguousarray(np.rot90(upright, -turns))


def vfr_times(count: int, *, fps: float = 30000 / 1001, gap_after: int = 30, gap: float = 0.3) -> list[float]:
    """Frame times (s) of a variable-frame-rate recording: steady, a `gap` after frame `gap_after` (a phone
    that dropped frames), and every 7th frame 10 ms late."""
    times, t = [], 0.0
    for i in range(count):
        times.append(t)
        t += 1 / fps + (gap if i == gap_after else 0.0) + (0.01 if i % 7 == 3 else 0.0)
    return times


def write_clip(
    dst: Path,
    frames: list[np.ndarray],
    *,
    fps: Fraction = Fraction(30000, 1001),
    times: list[float] | None = None,
    time_base: Fraction | None = None,
    rotation: tuple[float, bool] | None = None,
    sample_aspect: Fraction | None = None,
    audio: list[tuple[str, str]] = (),
    subtitles: list[tuple[float, float, str]] = (),
    attachments: list[tuple[str, bytes]] = (),
    codec: str = "libx264",
    colour: dict | None = None,
    options: dict | None = None,
    field_order: str | None = None,
) -> Path:
    """H.264 frames (their times `times` in seconds, else 1/fps apart) in the container of `dst`'s suffix.

    rotation: (degrees counter-clockwise, mirror) written as the stream's display matrix (PyAV's
    `set_display_rotation`); sample_aspect: the pixel aspect ratio; audio: one sine track per (codec,
    language), 440 Hz, 550 Hz, ..., as long as the video; subtitles: (start s, end s, text) in a subrip track;
    attachments: (file name, bytes) attached fonts (Matroska). colour: tags and pixel format (`BT709_HD`, ...):
    the RGB frames converted with that matrix and range (for HDR the frames' values are taken as the signal);
    options: the encoder's; field_order: "tt" or "bb" to code the frames interlaced, that field first.
    """
    height, width = frames[0].shape[:2]
    times = times if times is not None else [n / fps for n in range(len(frames))]
    time_base = time_base or (Fraction(1, 1000) if dst.suffix == ".mkv" else Fraction(1, 15360))
    out = av.open(str(dst), "w")
    colour = colour or {}
    video = out.add_stream(codec, rate=fps)
    video.width, video.height, video.pix_fmt = width, height, colour.get("pix_fmt", "yuv420p")
    video.codec_context.time_base = time_base
    video.options = options or {}
    for name in ("colorspace", "color_range", "color_primaries", "color_trc"):
        if name in colour:
            setattr(video.codec_context, name, colour[name])
    fields = None
    if field_order is not None:
        flags = av.codec.context.Flags
        video.codec_context.flags |= flags.interlaced_dct | flags.interlaced_me
        fields = av.filter.Graph()
        chain = [fields.add_buffer(width=width, height=height, format=video.pix_fmt, time_base=time_base)]
        chain += [fields.add("setfield", {"tt": "tff", "bb": "bff"}[field_order]), fields.add("buffersink")]
        chain[0].link_to(chain[1])
        chain[1].link_to(chain[2])
        fields.configure()
    if rotation is not None:
        video.set_display_rotation(rotation[0], hflip=rotation[1])
    if sample_aspect is not None:
        video.codec_context.sample_aspect_ratio = sample_aspect
    tracks = []
    for codec, language in audio:  # every stream must exist before the first packet is muxed
        stream = out.add_stream(codec, rate=AUDIO_RATE, layout="mono")
        stream.metadata["language"] = language
        tracks.append(stream)
    subtitle = out.add_mux_stream("subrip") if subtitles else None
    for name, data in attachments:
        out.add_attachment(name, "application/x-truetype-font", data)
    for rgb, t in zip(frames, times, strict=True):
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        if colour:
            frame = frame.reformat(
                format=video.pix_fmt, dst_colorspace=SCALER_MATRIX[colour["colorspace"]],
                dst_color_range="JPEG" if colour["color_range"] == 2 else "MPEG",
            )  # fmt: skip
            for name in ("colorspace", "color_range", "color_primaries", "color_trc"):
                setattr(frame, name, colour[name])
        frame.pts, frame.time_base = round(t / time_base), time_base
        if fields is not None:
            fields.push(frame)
            frame = fields.pull()
        out.mux(video.encode(frame))
    out.mux(video.encode(None))
    duration = times[-1] + 1 / fps
    for k, stream in enumerate(tracks):
        t = np.arange(int(duration * AUDIO_RATE)) / AUDIO_RATE
        wave = (0.2 * np.sin(2 * np.pi * (440 + 110 * k) * t)).astype(np.float32)
        resampler = av.AudioResampler(format=stream.format, layout="mono", rate=AUDIO_RATE)
        for i in range(0, len(wave), 1024):
            chunk = av.AudioFrame.from_ndarray(wave[None, i : i + 1024], format="flt", layout="mono")
            chunk.sample_rate, chunk.pts, chunk.time_base = AUDIO_RATE, i, Fraction(1, AUDIO_RATE)
            for part in resampler.resample(chunk):
                out.mux(stream.encode(part))
        for part in resampler.resample(None):
            out.mux(stream.encode(part))
        out.mux(stream.encode(None))
    for start, end, text in subtitles:
        packet = av.Packet(text.encode())
        packet.pts = packet.dts = round(start * 1000)
        packet.duration, packet.time_base, packet.stream = round((end - start) * 1000), Fraction(1, 1000), subtitle
        out.mux(packet)
    out.close()
    return dst


def ts_with_size_change(dst: Path, first: list[np.ndarray], then: list[np.ndarray]) -> Path:
    """An MPEG-TS capture whose frame size changes part-way (a broadcast switching resolution): two H.264
    segments, the second continuing the first's timestamps, joined byte for byte as a recorder writes them."""
    parts = []
    for k, frames in enumerate((first, then)):
        part = dst.with_name(f"{dst.stem}.part{k}.ts")
        out = av.open(str(part), "w")
        video = out.add_stream("libx264", rate=25)
        video.height, video.width = frames[0].shape[:2]
        video.pix_fmt = "yuv420p"
        for n, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = 10 + n + k * len(first), Fraction(1, 25)  # 10: no B-frame dts below 0
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        out.close()
        parts.append(part.read_bytes())
        part.unlink()
    dst.write_bytes(b"".join(parts))
    return dst


def unknown_codec_clip(dst: Path) -> Path:
    """A Matroska file whose video track names a codec no FFmpeg knows (a camera's own format)."""
    write_clip(dst.with_suffix(".tmp.mkv"), noise_frames(3))
    data = dst.with_suffix(".tmp.mkv").read_bytes()
    dst.with_suffix(".tmp.mkv").unlink()
    assert data.count(b"V_MPEG4/ISO/AVC") == 1
    dst.write_bytes(data.replace(b"V_MPEG4/ISO/AVC", b"V_MPEG4/ISO/XYZ"))
    return dst


def player_frames(path: Path) -> list[np.ndarray]:
    """Every frame as a player shows it: RGB converted with the matrix and range the file is tagged with, and where
    a tag is missing what players assume (BT.709 from 1280 pixels wide or 577 lines up, else BT.601; limited
    range). uint8, or uint16 (the signal's R'G'B', 0-65535) for deeper video."""
    frames = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            hd = frame.width >= 1280 or frame.height > 576
            matrix = SCALER_MATRIX.get(frame.colorspace, "ITU709" if hd else "ITU601")
            full = frame.color_range == 2 or frame.format.name.startswith("yuvj")
            deep = max(c.bits for c in frame.format.components) > 8
            rgb = frame.reformat(
                format="rgb48le" if deep else "rgb24", src_colorspace=matrix,
                src_color_range="JPEG" if full else "MPEG", dst_color_range="JPEG",
            )  # fmt: skip
            frames.append(rgb.to_ndarray())
    return frames


def _flagged(frame: av.VideoFrame, constant: str) -> bool:
    """Whether FFmpeg's `select` filter sees `frame` with this interlace type (a flag PyAV does not expose)."""
    graph = av.filter.Graph()
    size = {"width": frame.width, "height": frame.height}
    source = graph.add_buffer(**size, format=frame.format.name, time_base=Fraction(1, 25))
    select, sink = graph.add("select", f"eq(interlace_type\\,{constant})"), graph.add("buffersink")
    source.link_to(select)
    select.link_to(sink)
    graph.configure()
    graph.push(frame)
    graph.push(None)
    try:
        graph.pull()
        return True
    except (av.error.EOFError, av.error.BlockingIOError):
        return False


def field_orders(path: Path) -> list[str]:
    """Each frame's field order as the decoder flags it (what players deinterlace by): "tt", "bb" or
    "progressive"."""
    with av.open(str(path)) as container:
        frames = list(container.decode(video=0))
    names = {"tt": "TOPFIRST", "bb": "BOTTOMFIRST"}
    return [next((k for k, c in names.items() if _flagged(f, c)), "progressive") for f in frames]


def decoded_times(path: Path) -> list[float]:
    """Every video frame's presentation time (s), as a player shows them."""
    with av.open(str(path)) as container:
        return [float(f.pts * f.time_base) for f in container.decode(video=0)]


def audio_tracks(path: Path) -> list[dict]:
    """Per audio track, as a player plays it: codec, language, first sample's time and seconds of sound."""
    with av.open(str(path)) as container:
        tracks = {
            s.index: {"codec": s.codec_context.name, "language": s.metadata.get("language"), "start": None}
            for s in container.streams.audio
        }
        for track in tracks.values():
            track["seconds"] = 0.0
        for packet in container.demux(container.streams.audio):
            for frame in packet.decode():
                track = tracks[packet.stream.index]
                if track["start"] is None:
                    track["start"] = float(frame.pts * frame.time_base)
                track["seconds"] += frame.samples / frame.sample_rate
    return list(tracks.values())
