"""The input's other streams in the restored video (issue 19): every audio track, copied packet by packet
(re-encoded to AAC only when the output container cannot hold its codec), and the subtitle tracks and
attachments (their fonts) the container can hold; what was kept and what was not, in words, for the
run's summary.

Packets come from a second demuxer over the input and are muxed as the video advances (`mux_until`), so
a long video never holds more than `AHEAD_S` seconds of them; their timestamps are the input's, as the
video's are, so every track stays in sync whatever the frame timing.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path

import av

log = logging.getLogger(__name__)

AUDIO_FALLBACK = "aac"  # what an audio track becomes in a container that cannot hold its codec
AHEAD_S = 0.5  # packets are muxed up to this many seconds past the last video frame written


def main_video(container: av.container.InputContainer) -> av.video.stream.VideoStream | None:
    """The video stream that is restored: the first that is not a still (a cover picture)."""
    still = av.stream.Disposition.attached_pic
    return next((s for s in container.streams.video if not s.disposition & still), None)


def describe(stream: av.stream.Stream) -> str:
    """`audio 2 (pcm_u8, eng)`: the stream's index in the input, its codec (or name) and language."""
    if stream.codec_context is not None:
        codec = stream.codec_context.codec.canonical_name
    else:  # an attachment's file name, a data stream's handler (e.g. a camera's timecode)
        codec = getattr(stream, "name", None) or stream.metadata.get("handler_name") or "unknown codec"
    language = stream.metadata.get("language")
    return f"{stream.type} {stream.index} ({codec}{', ' + language if language and language != 'und' else ''})"


def container_holds(format_name: str, stream: av.stream.Stream) -> bool:
    """Whether a `format_name` container can carry `stream`'s packets as they are: its header written in
    memory (FFmpeg's codec query alone accepts codecs that the muxer then refuses, e.g. vorbis in mp4)."""
    probe = av.open(io.BytesIO(), "w", format=format_name)
    try:
        probe.add_stream_from_template(stream)
        probe.start_encoding()
        return True
    except (ValueError, av.FFmpegError):
        return False
    finally:
        try:
            probe.close()
        except (ValueError, av.FFmpegError):
            pass


@dataclass
class Route:
    source: av.stream.Stream
    target: av.stream.Stream
    resampler: av.AudioResampler | None = None  # set when the track is re-encoded


class StreamCopier:
    """Adds the input's audio and subtitle tracks to `output` (before its header is written) and copies
    their packets into it, interleaved with the video by time."""

    def __init__(self, output: av.container.OutputContainer, source: str | Path):
        self.output = output
        self.kept: list[str] = []
        self.dropped: list[str] = []
        self._routes: dict[int, Route] = {}
        self._pending: av.Packet | None = None
        self._input = av.open(str(source))
        video = main_video(self._input)
        container = output.format.name.split(",")[0]
        for stream in self._input.streams:
            if video is not None and stream.index == video.index:
                continue
            label = describe(stream)
            if stream.type not in ("audio", "subtitle", "attachment"):
                self.dropped.append(f"{label}: {stream.type} streams are not copied")
            elif container_holds(output.format.name, stream):
                target = output.add_stream_from_template(stream)
                if stream.type != "attachment":  # an attachment (a subtitle font) has no packets
                    self._add(stream, target)
                self.kept.append(f"{label}: copied")
            elif stream.type == "audio" and stream.codec_context is not None:
                context = stream.codec_context
                layout = context.layout
                if layout.name.endswith("channels"):  # channels of no stated order: the usual order for their count
                    layout = av.AudioLayout(f"{layout.nb_channels}c")
                target = output.add_stream(AUDIO_FALLBACK, rate=context.sample_rate, layout=layout)
                resampler = av.AudioResampler(format=target.format, layout=layout, rate=context.sample_rate)
                self._add(stream, target, resampler)
                self.kept.append(f"{label}: re-encoded to {AUDIO_FALLBACK} (the {container} container cannot hold it)")
            else:
                self.dropped.append(f"{label}: the {container} container cannot hold it")
        routed = [route.source for route in self._routes.values()]
        self._packets = iter(self._input.demux(routed)) if routed else None
        if not routed:
            self._input.close()

    def _add(self, source: av.stream.Stream, target: av.stream.Stream, resampler=None) -> None:
        for key in ("language", "title"):
            if key in source.metadata:
                target.metadata[key] = source.metadata[key]
        target.disposition = source.disposition
        self._routes[source.index] = Route(source, target, resampler)

    def mux_until(self, seconds: float | None) -> None:
        """Mux every packet whose time is before `seconds` (all that remain when None)."""
        while self._packets is not None:
            packet = self._pending
            if packet is None:
                try:
                    packet = next(self._packets)
                except (StopIteration, av.FFmpegError):
                    self._packets = None
                    return
            if packet.dts is None:  # the demuxer's final flush packet
                self._pending = None
                continue
            stamp = packet.pts if packet.pts is not None else packet.dts
            if seconds is not None and float(stamp * packet.time_base) > seconds:
                self._pending = packet
                return
            self._pending = None
            self._write(packet)

    def _write(self, packet: av.Packet) -> None:
        route = self._routes[packet.stream.index]
        if route.resampler is None:
            packet.stream = route.target
            self.output.mux(packet)
            return
        try:
            frames = route.source.decode(packet)
        except av.FFmpegError as exc:  # one damaged audio packet: a gap, not a failed video
            log.warning("%s: packet at %s not decoded: %s", describe(route.source), packet.pts, exc)
            return
        for frame in frames:
            self._encode(route, frame)

    def _encode(self, route: Route, frame: av.AudioFrame | None) -> None:
        for chunk in route.resampler.resample(frame):
            self.output.mux(route.target.encode(chunk))
        if frame is None:
            self.output.mux(route.target.encode(None))

    def finish(self) -> None:
        """Mux what remains and flush the re-encoded tracks (before the output's trailer)."""
        self.mux_until(None)
        for route in self._routes.values():
            if route.resampler is not None:
                for frame in route.source.decode(None):
                    self._encode(route, frame)
                self._encode(route, None)
        self.close()

    def close(self) -> None:
        self._packets = None
        self._input.close()
