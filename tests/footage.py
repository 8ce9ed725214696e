"""Test clips, generated with PyAV: the sample's frames or noise, and clips as phones and cameras make them
(issue 19): stored sideways with a display matrix, variable frame rate, several audio tracks and a subtitle
track, a pixel aspect ratio, a capture whose frame size changes mid-stream, a video codec no decoder knows.

    write_clip(path, frames, times=..., rotation=(-90, False), audio=[("aac", "eng"), ("pcm_u8", "fra")])
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "assets" / "carphone_sample.mp4"
AUDIO_RATE = 16000


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
) -> Path:
    """`codec` frames (their times `times` in seconds, else 1/fps apart) in the container of `dst`'s suffix.

    codec: libx264 (B-frames), or mjpeg / dvvideo (intra only, as cameras' AVI and DV files; DV takes 720x576
    at 25 frames/s or 720x480 at 30000/1001); rotation: (degrees counter-clockwise, mirror) written as the
    stream's display matrix (PyAV's `set_display_rotation`); sample_aspect: the pixel aspect ratio; audio:
    one track per (codec, language), `audio_layout` at `audio_rate`, from `audio_span`'s start to its end
    (seconds; default: as long as the video), a sine of 440 Hz, 550 Hz, ..., or silence with a 20 ms beep of
    it at each of `beeps` (seconds) to measure sync by; subtitles: (start s, end s, text) in a subrip track;
    attachments: (file name, bytes) attached fonts (Matroska).
    """
    height, width = frames[0].shape[:2]
    times = times if times is not None else [n / fps for n in range(len(frames))]
    if time_base is None:  # AVI and DV count frames
        time_base = {".mkv": Fraction(1, 1000), ".avi": 1 / fps, ".dv": 1 / fps}.get(dst.suffix, Fraction(1, 15360))
    out = av.open(str(dst), "w")
    video = out.add_stream(codec, rate=fps)
    video.width, video.height = width, height
    video.pix_fmt = {"mjpeg": "yuvj420p", "dvvideo": "yuv411p" if height == 480 else "yuv420p"}.get(codec, "yuv420p")
    video.codec_context.time_base = time_base
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
        frame.pts, frame.time_base = round(t / time_base), time_base
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
