"""The input's other streams in the restored video: every audio track, copied packet by packet (re-encoded
to AAC only when the output container cannot hold it), and the subtitle tracks and attachments (their
fonts) the container can hold; what was kept and what was not, in words, for the run's summary.

Whether the container holds a track is decided when the output is opened, before its first frame is written,
by writing a whole file of that track in memory (`container_holds`). Packets come from a second demuxer
over the input and are muxed as the video advances (`mux_until`), so a long video never holds more than
`AHEAD_S` seconds of them. Every packet of that demuxer passes through a `Timeline`, as the reader's do,
so every track lands where the video does: starting from zero, discontinuities made continuous.
"""

from __future__ import annotations

import io
import logging
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av

from .timeline import Timeline

log = logging.getLogger(__name__)

AUDIO_FALLBACK = "aac"  # what an audio track becomes in a container that cannot hold its codec
AHEAD_S = 0.5  # packets are muxed up to this many seconds past the last video frame written
PROBE_S = 10.0  # the first packet of each track is looked for in this many seconds of the input at most


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


def container_holds(format_name: str, stream: av.stream.Stream, packet: av.Packet | None = None) -> bool:
    """Whether a `format_name` container can carry `stream`'s packets as they are: a whole file written in
    memory, header, `packet` (the stream's first, where it has one) and trailer. The header alone accepts
    what the muxer refuses later: an MP4 describes its tracks at the trailer, where it refuses PCM whose
    channel order is not stated (stereo PCM from AVI or Matroska), and it reads an AC-3 track's parameters
    from its packets. (FFmpeg's codec query accepts more still, e.g. vorbis in mp4.)"""
    probe = av.open(io.BytesIO(), "w", format=format_name)
    try:
        target = probe.add_stream_from_template(stream)
        probe.start_encoding()
        if packet is not None:
            copy = av.Packet(bytes(packet))  # muxing consumes a packet's data: the copier's stays as it is
            copy.pts = copy.dts = 0
            copy.duration, copy.time_base, copy.stream = packet.duration, packet.time_base, target
            probe.mux(copy)
        probe.close()  # the trailer
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
    start: float | None = None  # the previous packet (decoded frame) written: its time, s
    end: float | None = None  # ... and where it ended
    overlaps: int = 0  # packets (frames) left out because they began inside the previous ones

    def follows(self, start: float, duration: float) -> bool:
        """Whether a packet (a decoded frame) at `start` for `duration` s may follow the previous one written.
        Not if it goes back (a muxer refuses that); an audio packet neither where its first half lies inside
        the previous one: where a discontinuity was made continuous the two segments' sound overlaps a
        little, and played back to back, as players play it, the overlap would delay everything after it."""
        if self.start is not None:
            audio = self.source.type == "audio"
            if start < self.start or (audio and (start == self.start or start + duration / 2 < self.end)):
                self.overlaps += 1
                return False
        self.start, self.end = start, start + duration
        return True


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
        self.timeline = Timeline(self._input, video)
        self._packets: Iterator[av.Packet] | None = self._read()
        self._ahead: deque[av.Packet] = deque()  # packets read while looking for each track's first
        others = [s for s in self._input.streams if video is None or s.index != video.index]
        first = self._first_packets([s for s in others if s.type in ("audio", "subtitle")])
        for stream in others:
            self._route(stream, first.get(stream.index))
        if not self._routes:
            self.close()

    def _read(self) -> Iterator[av.Packet]:
        """Every packet of the input, in the order it is read, on the output's timeline."""
        for packet in self._input.demux():
            self.timeline.place(packet)
            yield packet

    def _first_packets(self, streams: list[av.stream.Stream]) -> dict[int, av.Packet]:
        """Each of `streams`' first packet within the input's first `PROBE_S` seconds (a sparse subtitle
        track may have none there). The packets read meanwhile wait in `_ahead`."""
        wanted, first = {s.index for s in streams}, {}
        while wanted - first.keys():
            packet = self._next_read()
            if packet is None:
                break
            if packet.stream.index in wanted:
                self._ahead.append(packet)
                if packet.size and packet.stream.index not in first:
                    first[packet.stream.index] = packet
            if self.timeline.seconds(packet) > PROBE_S:
                break
        return first

    def _route(self, stream: av.stream.Stream, packet: av.Packet | None) -> None:
        """Copy `stream`, re-encode it (audio the container cannot hold) or leave it out, and say which."""
        label, container = describe(stream), self.output.format.name.split(",")[0]
        if stream.type not in ("audio", "subtitle", "attachment"):
            self.dropped.append(f"{label}: {stream.type} streams are not copied")
        elif container_holds(self.output.format.name, stream, packet):
            target = self.output.add_stream_from_template(stream)
            if stream.type != "attachment":  # an attachment (a subtitle font) has no packets
                self._add(stream, target)
            self.kept.append(f"{label}: copied")
        elif stream.type == "audio" and stream.codec_context is not None:
            context = stream.codec_context
            layout = context.layout
            if layout.name.endswith("channels"):  # channels of no stated order: the usual order for their count
                layout = av.AudioLayout(f"{layout.nb_channels}c")
            target = self.output.add_stream(AUDIO_FALLBACK, rate=context.sample_rate, layout=layout)
            resampler = av.AudioResampler(format=target.format, layout=layout, rate=context.sample_rate)
            self._add(stream, target, resampler)
            self.kept.append(f"{label}: re-encoded to {AUDIO_FALLBACK} (the {container} container cannot hold it)")
        else:
            self.dropped.append(f"{label}: the {container} container cannot hold it")

    def _add(self, source: av.stream.Stream, target: av.stream.Stream, resampler=None) -> None:
        for key in ("language", "title"):
            if key in source.metadata:
                target.metadata[key] = source.metadata[key]
        target.disposition = source.disposition
        self._routes[source.index] = Route(source, target, resampler)

    def _next_read(self) -> av.Packet | None:
        """The demuxer's next packet with a time (None at the end, or where the input cannot be read on)."""
        while self._packets is not None:
            try:
                packet = next(self._packets)
            except (StopIteration, av.FFmpegError):
                self._packets = None
                return None
            if packet.dts is not None or packet.pts is not None:  # not a flush packet
                return packet
        return None

    def _next(self) -> av.Packet | None:
        """The next packet of a track that is kept: those read while probing first."""
        while True:
            packet = self._ahead.popleft() if self._ahead else self._next_read()
            if packet is None or packet.stream.index in self._routes:
                return packet

    def mux_until(self, seconds: float | None) -> None:
        """Mux every packet whose time is before `seconds` (all that remain when None)."""
        while self._routes:
            packet = self._pending if self._pending is not None else self._next()
            if packet is None:
                return
            if seconds is not None and self.timeline.seconds(packet) > seconds:
                self._pending = packet
                return
            self._pending = None
            self._write(packet)

    def _write(self, packet: av.Packet) -> None:
        route = self._routes[packet.stream.index]
        if route.resampler is None:
            if route.follows(self.timeline.seconds(packet), float((packet.duration or 0) * packet.time_base)):
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
        if frame is not None and frame.pts is not None:
            if not route.follows(float(frame.pts * frame.time_base), frame.samples / frame.sample_rate):
                return
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
            if route.overlaps:
                log.info("%s: %d packets overlapping earlier ones left out", describe(route.source), route.overlaps)
        self.close()

    def close(self) -> None:
        self._packets = None
        self._ahead.clear()
        self._input.close()
