"""The output's timeline: where each packet of the input lands, the same for every stream of it.

FFmpeg's command line does two things to an input's timestamps before anything is decoded or written,
and so does this:

1. The input's start time (the earliest first timestamp of its streams; a transport stream commonly starts
   at 1.4 s) is subtracted from every stream: the output starts at zero, and an audio track that starts
   0.2 s after the pictures still does.
2. In formats whose timestamps may jump (MPEG-TS and MPEG-PS, flagged AVFMT_TS_DISCONT: a recorder's
   segments joined end to end, each counting again from near zero), a packet of the restored video or of
   an audio track whose decoding time goes back by more than 0.1 s, or jumps by more than 10 s, from where
   its stream's previous packet ended starts a new offset that makes it follow on. The offset is the
   input's, applied to every stream from then on, so the second segment's sound stays with its pictures.

The reader (the video) and the stream copier (audio, subtitles) read the input with demuxers of their own;
each passes every packet of the input, in the order it is read, through a `Timeline` of its own, so both
arrive at the same offsets.
"""

from __future__ import annotations

import logging
from fractions import Fraction

import av

log = logging.getLogger(__name__)

TS_DISCONT = 0x0200  # AVFMT_TS_DISCONT: the format's timestamps may jump
JUMP_US = 10_000_000  # a jump forward counts as a discontinuity beyond this (FFmpeg's -dts_delta_threshold, 10 s)
BACK_US = 100_000  # ... a step back beyond this (0.1 s, as FFmpeg)
US = Fraction(1, 1_000_000)  # FFmpeg's AV_TIME_BASE: the container's start time and the offsets are in it


def to_us(ticks: int, time_base: Fraction) -> int:
    return round(ticks * time_base / US)


def to_ticks(us: int, time_base: Fraction) -> int:
    return round(us * US / time_base)


class Timeline:
    """Moves each packet of `container` onto the output's timeline (`place`), in the order they are read;
    discontinuities are looked for in `video` (the restored one) and the audio tracks, the streams kept."""

    def __init__(self, container: av.container.InputContainer, video: av.stream.Stream | None):
        self.start = container.start_time or 0  # microseconds
        self._watched = {s.index for s in container.streams.audio} | ({video.index} if video is not None else set())
        self.jumps = bool(container.format.flags & TS_DISCONT)
        self.offset = 0  # microseconds: the sum of the discontinuities so far
        self.discontinuities = 0
        self._end: dict[int, int] = {}  # per stream: where its previous packet ended (us, on the output's timeline)
        self._dts: dict[int, int] = {}  # per stream: its previous packet's decoding time (us)
        self._last: int | None = None  # the previous audio or video packet's decoding time, any stream (us)

    def place(self, packet: av.Packet) -> None:
        """Shift `packet`'s pts and dts (in its own time base) by the start time and the offsets so far, and
        start a new offset where its stream's timestamps jump."""
        if packet.dts is None and packet.pts is None:  # no time (a demuxer's flush packet)
            return
        self._shift(packet, self.offset - self.start)
        if self.jumps and packet.dts is not None and packet.stream.index in self._watched:
            self._follow(packet)

    def stats(self) -> dict:
        """For the run's summary: the input's start time (s) and the discontinuities made continuous so far."""
        return {"start_time": round(float(self.start * US), 6), "timestamp_jumps": self.discontinuities}

    def seconds(self, packet: av.Packet) -> float:
        """The packet's presentation time (its decoding time where it has none), in seconds."""
        stamp = packet.pts if packet.pts is not None else packet.dts
        return float(stamp * packet.time_base)

    def _shift(self, packet: av.Packet, us: int) -> None:
        ticks = to_ticks(us, packet.time_base)
        if packet.pts is not None:
            packet.pts += ticks
        if packet.dts is not None:
            packet.dts += ticks

    def _follow(self, packet: av.Packet) -> None:
        index, time_base = packet.stream.index, packet.time_base
        dts = to_us(packet.dts, time_base)
        expected = self._end.get(index)
        if expected is not None:
            delta = dts - expected
            jumped = abs(delta) > JUMP_US or dts + BACK_US < self._dts[index]
        else:  # a stream's first packet, far from the others' (FFmpeg's inter-stream discontinuity)
            delta = dts - self._last if self._last is not None else 0
            jumped = abs(delta) > JUMP_US
        if jumped:
            self.offset -= delta
            self.discontinuities += 1
            self._shift(packet, -delta)
            dts -= delta
            # the reader's and the copier's timelines both see it: the summary's `timestamp_jumps` tells the user
            log.debug("stream %d: timestamps jump by %.3f s at %.3f s; made continuous", index, delta / 1e6, dts / 1e6)
        self._last = self._dts[index] = dts
        self._end[index] = dts + self._duration(packet)

    def _duration(self, packet: av.Packet) -> int:
        """The packet's duration (us): its own, else a frame of the stream's nominal rate."""
        if packet.duration:
            return to_us(packet.duration, packet.time_base)
        stream = packet.stream
        if stream.type == "video":
            rate = stream.average_rate or stream.guessed_rate
            return round(1 / (rate * US)) if rate else 0
        context = stream.codec_context
        if context is not None and context.sample_rate and context.frame_size:
            return round(Fraction(context.frame_size, context.sample_rate) / US)
        return 0
