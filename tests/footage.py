"""Test clips, generated with PyAV: the sample's frames or noise, and clips as phones and cameras make them:
stored sideways with a display matrix, variable frame rate, several audio tracks and a subtitle
track, a pixel aspect ratio, a capture whose frame size changes mid-stream, a video codec no decoder knows;
colour-tagged, full-range, 10-bit HDR (HLG, PQ, with their side data) and interlaced video.

    write_clip(path, frames, times=..., rotation=(-90, False), audio=[("aac", "eng"), ("pcm_u8", "fra")])
    write_clip(path, frames, codec="libx265", colour=HLG, options={"x265-params": HDR_PARAMS})
    player_frames(path)   # every frame's RGB as a player shows it (the tags the file carries)
"""

from __future__ import annotations

import json
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
    counter-clockwise, then a left-right mirror): the inverse of `keep.image.orient`."""
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
    codec: str = "libx264",
    rotation: tuple[float, bool] | None = None,
    sample_aspect: Fraction | None = None,
    audio: list[tuple[str, str]] = (),
    audio_layout: str = "mono",
    audio_rate: int = AUDIO_RATE,
    audio_span: tuple[float, float] | None = None,
    beeps: list[float] = (),
    subtitles: list[tuple[float, float, str]] = (),
    attachments: list[tuple[str, bytes]] = (),
    colour: dict | None = None,
    options: dict | None = None,
    field_order: str | None = None,
) -> Path:
    """`codec` frames (their times `times` in seconds, else 1/fps apart) in the container of `dst`'s suffix.

    codec: libx264 (B-frames), or mjpeg / dvvideo (intra only, as cameras' AVI and DV files; DV takes 720x576
    at 25 frames/s or 720x480 at 30000/1001), or libx265; rotation: (degrees counter-clockwise, mirror) written
    as the stream's display matrix (PyAV's `set_display_rotation`); sample_aspect: the pixel aspect ratio;
    audio: one track per (codec, language), `audio_layout` at `audio_rate`, from `audio_span`'s start to its
    end (seconds; default: as long as the video), a sine of 440 Hz, 550 Hz, ..., or silence with a 20 ms beep
    of it at each of `beeps` (seconds) to measure sync by; subtitles: (start s, end s, text) in a subrip
    track; attachments: (file name, bytes) attached fonts (Matroska). colour: tags and pixel format
    (`BT709_HD`, ...): the RGB frames converted with that matrix and range (for HDR the frames' values are
    taken as the signal); options: the encoder's; field_order: "tt" or "bb" to code the frames interlaced,
    that field first.
    """
    height, width = frames[0].shape[:2]
    times = times if times is not None else [n / fps for n in range(len(frames))]
    if time_base is None:  # AVI and DV count frames
        time_base = {".mkv": Fraction(1, 1000), ".avi": 1 / fps, ".dv": 1 / fps}.get(dst.suffix, Fraction(1, 15360))
    out = av.open(str(dst), "w")
    colour = colour or {}
    video = out.add_stream(codec, rate=fps)
    video.width, video.height = width, height
    default = {"mjpeg": "yuvj420p", "dvvideo": "yuv411p" if height == 480 else "yuv420p"}.get(codec, "yuv420p")
    video.pix_fmt = colour.get("pix_fmt", default)
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
    # every stream must exist before the first packet is muxed
    tracks = [out.add_stream(codec, rate=audio_rate, layout=audio_layout) for codec, _ in audio]
    for stream, (_, language) in zip(tracks, audio, strict=True):
        stream.metadata["language"] = language
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
    span = audio_span or (times[0], times[-1] + 1 / fps)
    for k, stream in enumerate(tracks):
        write_sound(out, stream, span, 440 + 110 * k, beeps)
    for start, end, text in subtitles:
        packet = av.Packet(text.encode())
        packet.pts = packet.dts = round(start * 1000)
        packet.duration, packet.time_base, packet.stream = round((end - start) * 1000), Fraction(1, 1000), subtitle
        out.mux(packet)
    out.close()
    return dst


def write_sound(out: av.container.OutputContainer, stream: av.AudioStream, span: tuple[float, float], tone: float,
                beeps: list[float]) -> None:  # fmt: skip
    """`stream`'s samples from `span[0]` to `span[1]` s: a sine of `tone` Hz, or silence with a 20 ms beep of it
    at each of `beeps`."""
    rate, layout = stream.sample_rate, stream.layout.name
    first = round(span[0] * rate)
    t = (first + np.arange(round(span[1] * rate) - first)) / rate
    wave = 0.2 * np.sin(2 * np.pi * tone * t)
    if beeps:
        wave *= np.any([(t >= b) & (t < b + 0.02) for b in beeps], axis=0)
    wave = np.repeat(wave[None].astype(np.float32), stream.layout.nb_channels, 0)
    resampler = av.AudioResampler(format=stream.format, layout=layout, rate=rate)
    for i in range(0, wave.shape[1], 1024):
        chunk = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave[:, i : i + 1024]), format="fltp", layout=layout)
        chunk.sample_rate, chunk.pts, chunk.time_base = rate, first + i, Fraction(1, rate)
        for part in resampler.resample(chunk):
            out.mux(stream.encode(part))
    for part in resampler.resample(None):
        out.mux(stream.encode(part))
    out.mux(stream.encode(None))


def joined_ts(dst: Path, segments: list[list[np.ndarray]], *, restart: bool, fps: Fraction = Fraction(25),
              **clip) -> Path:  # fmt: skip
    """An MPEG-TS recording in segments joined byte for byte, as cameras and recorders write them: each
    segment's timestamps count again from 1.4 s (`restart`) or continue the previous segment's. `clip`: more
    of `write_clip`'s arguments (audio, beeps, ...), the beeps' times counted within each segment."""
    parts, start = [], 1.4  # 1.4 s: where FFmpeg's TS muxer starts, and no B-frame's dts below zero
    for k, frames in enumerate(segments):
        part = dst.with_name(f"{dst.stem}.part{k}.ts")
        times = [start + n / fps for n in range(len(frames))]
        extra = {**clip, "beeps": [start + b for b in clip.get("beeps", ())]}
        parts.append(write_clip(part, frames, fps=fps, times=times, **extra).read_bytes())
        part.unlink()
        start = start if restart else start + len(frames) / fps
    dst.write_bytes(b"".join(parts))
    return dst


def ts_with_size_change(dst: Path, first: list[np.ndarray], then: list[np.ndarray]) -> Path:
    """An MPEG-TS capture whose frame size changes part-way (a broadcast switching resolution): two H.264
    segments, the second continuing the first's timestamps."""
    return joined_ts(dst, [first, then], restart=False)


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


def beep_times(path: Path) -> list[float]:
    """When each beep of the first audio track starts (s), as a player plays it: the first sample of its first
    channel louder than a quarter of the beeps' amplitude after 50 ms without one (`write_clip`'s `beeps`)."""
    onsets, loud = [], -np.inf  # loud: the last loud sample's time
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            data, kind = frame.to_ndarray().astype(np.float64), frame.format.name.rstrip("p")
            if kind == "u8":
                data = (data - 128) / 128
            elif kind in ("s16", "s32"):
                data /= 2 ** (int(kind[1:]) - 1)
            first = data[0] if frame.format.is_planar else data.reshape(frame.samples, -1)[:, 0]
            start = float(frame.pts * frame.time_base)
            for i in np.flatnonzero(np.abs(first) > 0.05):
                t = start + i / frame.sample_rate
                if t - loud > 0.05:
                    onsets.append(t)
                loud = t
    return onsets


def two_person_frames(count: int, start: int = 0) -> list[np.ndarray]:
    """`count` 352x144 frames of two real people: the sample clip's man (frames `start`...) on the left, the
    astronaut of scikit-image's photo on the right (smaller, the camera panning slowly across the photo).
    Detected in that order, they are tracks 0 (the astronaut, face about 48 px) and 1 (the man, about 65 px)."""
    import cv2
    from skimage.data import astronaut

    photo = astronaut()
    frames = []
    for n, left in enumerate(sample_frames(count, start)):
        x = 5 + start + n  # one pixel of the photo per frame
        right = cv2.resize(photo[0:360, x : x + 440], (176, 144), interpolation=cv2.INTER_AREA)
        frames.append(np.concatenate([left, right], axis=1))
    return frames


def far_from_faces(faces_log: Path, shape: tuple[int, int], margin: int = 4) -> list[np.ndarray]:
    """Per frame, a boolean mask of the pixels at least `margin` px outside every face crop's box."""
    masks = []
    for line in faces_log.read_text().splitlines():
        far = np.ones(shape, bool)
        for face in json.loads(line)["faces"]:
            corners = np.array(face["corners"])
            left, top = np.floor(corners.min(0)).astype(int) - margin
            right, bottom = np.ceil(corners.max(0)).astype(int) + margin
            far[max(top, 0) : max(bottom, 0), max(left, 0) : max(right, 0)] = False
        masks.append(far)
    return masks


def worker_pids(parent: int) -> list[int]:
    """The pipeline's stage worker processes of process `parent`, in the order they started: the children of
    its fork server (keep.pipeline.workers.process_context), or its spawned children where a platform has no
    fork server; neither the server nor the resource tracker. Linux /proc."""

    def children(pid: int) -> list[int]:
        try:
            return [
                int(c) for task in Path(f"/proc/{pid}/task").iterdir() for c in (task / "children").read_text().split()
            ]
        except OSError:
            return []

    pids = []
    for child in children(parent):
        try:
            command = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"multiprocessing.forkserver" in command:
            pids += children(child)
        elif b"spawn_main" in command:
            pids.append(child)
    return pids
