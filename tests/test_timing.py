"""Audio and timing as players meet them: PCM audio from cameras' AVI and DV files and from Matroska into MP4,
MPEG-TS recordings joined from segments whose timestamps restart, and a TS that starts at 1.5 s.

Each test runs `inference.py` once, as a subprocess under a timeout, over a folder of generated clips
(`tests/footage.py`) and decodes the outputs with PyAV: every frame's presentation time, the audio tracks
and when their beeps sound. Sync is measured as a player meets it: each clip's audio is silent but for
20 ms beeps written at the times of chosen frames, and a beep must start when its frame is shown (within
2 ms; one frame is 40 ms).
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from footage import audio_tracks, beep_times, decoded_times, joined_ts, noise_frames, write_clip
from test_footage import finish, run_inference

from keep.video import VideoWriter, open_input
from keep.video.streams import container_holds

FPS = Fraction(25)
# MP4 outputs; x264's fastest preset (DV's 720x576 frames at the default one took longer than their detection)
RUN = ["--model", "preset:tiny", "--flow", "dis", "--threads", "1", "--set", "overlap=threads", "container=mp4"]
RUN += ["preset=ultrafast"]


def restore(folder: Path, out: Path) -> dict[str, dict]:
    """`inference.py` over every clip of `folder` (MP4 outputs); each output's summary by stem."""
    rc, stdout, stderr = finish(run_inference("-i", str(folder), "-o", str(out), *RUN), timeout=400)
    assert rc == 0 and "error:" not in stderr and "Traceback" not in stderr, stderr[-3000:]
    return {p.name.removesuffix("_summary.json"): json.loads(p.read_text()) for p in out.glob("*_summary.json")}


def frames_of(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24").astype(np.int16) for f in container.decode(video=0)]


def shown_in_order(path: Path, frames: list[np.ndarray]) -> bool:
    """Whether the video shows `frames` (noise, each unlike the others), each once, in order."""
    shown = frames_of(path)
    nearest = [int(np.argmin([np.abs(s - f).mean() for f in frames])) for s in shown]
    return nearest == list(range(len(frames)))


def test_a_stereo_pcm_track_is_refused_by_mp4_only_at_its_trailer(tmp_path):
    """The test of "can hold" writes a whole file: MP4 takes mono PCM, and stereo PCM whose channel order is
    stated (DV's), but refuses at the trailer the stereo PCM of AVI and Matroska, whose order is not
    (a header written alone took it, and the run failed after all its work)."""
    for name, layout, holds in (("mono.avi", "mono", True), ("stereo.avi", "stereo", False), ("dv.dv", "stereo", True)):
        dv = name.endswith(".dv")
        clip = write_clip(tmp_path / name, noise_frames(2, 576 if dv else 48, 720 if dv else 64), fps=FPS,
                          codec="dvvideo" if dv else "mjpeg", audio=[("pcm_s16le", "und")], audio_layout=layout,
                          audio_rate=48000)  # fmt: skip
        with av.open(str(clip)) as container:
            stream = container.streams.audio[0]
            packet = next(p for p in container.demux(stream) if p.size)
            assert container_holds("mp4", stream, packet) is holds, name
            assert container_holds("matroska", stream, packet)


@pytest.mark.parametrize(
    ("name", "first", "audio_span", "beeps"),
    [("cut.mp4", -3, (0.0, 1.2), [0.2, 1.0]), ("short.mkv", 0, (0.1, 0.5), [0.2])],
)
def test_edit_lists_and_audio_longer_or_shorter_than_the_video_are_kept(tmp_path, name, first, audio_span, beeps):
    """An MP4 whose first 3 frames have negative times (its edit list cuts them; H.264 with B-frames) and
    whose audio runs half a second past the video, and a Matroska file whose audio starts 0.1 s late and ends early:
    rewritten, the output shows the frames the input shows, at the same times, and the audio plays as long,
    from the same time, its beeps where they were."""
    times = [(n + first) / FPS for n in range(20)]
    clip = write_clip(tmp_path / name, noise_frames(20), fps=FPS, times=times, audio=[("aac", "und")],
                      audio_span=audio_span, beeps=beeps)  # fmt: skip
    reader = open_input(clip)
    output = tmp_path / f"out{clip.suffix}"
    writer = VideoWriter(output, width=reader.width, height=reader.height, fps=reader.fps, time_base=reader.time_base,
                         preset="ultrafast", streams_from=clip)  # fmt: skip
    for frame in reader:
        writer.write(frame.rgb, frame.pts)
    writer.close()
    assert len(decoded_times(clip)) == 20 + min(first, 0) and writer.retimed == 0
    assert decoded_times(output) == pytest.approx(decoded_times(clip), abs=1e-4)
    (before,), (after,) = audio_tracks(clip), audio_tracks(output)
    assert (after["start"], after["seconds"]) == pytest.approx((before["start"], before["seconds"]), abs=1e-3)
    assert beep_times(output) == pytest.approx(beep_times(clip), abs=1e-3)


def test_pcm_audio_of_avi_dv_and_matroska_is_kept_in_mp4(tmp_path):
    """A camera's AVI (MJPEG, stereo 16-bit PCM), a DV tape capture (720x576, its PCM) and a Matroska file with
    stereo PCM, restored to MP4: before, each ended in an internal failure at the end of the run and no
    output. The DV track is copied; the others, which MP4 cannot hold (channel order not stated), are
    re-encoded to AAC; the summary says which. Every frame keeps its time and the beeps their frames."""
    clips = tmp_path / "clips"
    clips.mkdir()
    pcm = {"audio": [("pcm_s16le", "und")], "audio_layout": "stereo", "audio_rate": 48000, "beeps": [0.2]}
    frames = {"camera.avi": noise_frames(10), "tape.dv": noise_frames(10, 576, 720), "studio.mkv": noise_frames(10)}
    for name, pictures in frames.items():
        codec = {"camera.avi": "mjpeg", "tape.dv": "dvvideo"}.get(name, "libx264")
        write_clip(clips / name, pictures, fps=FPS, codec=codec, **pcm)
    summaries = restore(clips, tmp_path / "out")
    expected = {"camera": "re-encoded to aac (the mp4 container cannot hold it)", "tape": "copied",
                "studio": "re-encoded to aac (the mp4 container cannot hold it)"}  # fmt: skip
    for name in frames:
        stem, clip = Path(name).stem, clips / name
        output = tmp_path / "out" / f"{stem}.mp4"
        assert summaries[stem]["streams"] == {"kept": [f"audio 1 (pcm_s16le): {expected[stem]}"], "not_kept": []}
        assert decoded_times(output) == pytest.approx(decoded_times(clip), abs=1e-4)
        (before,), (after,) = audio_tracks(clip), audio_tracks(output)
        assert after["codec"] == ("pcm_s16le" if stem == "tape" else "aac"), stem
        assert after["start"] == pytest.approx(before["start"], abs=1e-3)
        assert after["seconds"] == pytest.approx(before["seconds"], abs=0.03)  # AAC's last frame pads
        assert beep_times(output) == pytest.approx([decoded_times(output)[5]], abs=0.002), stem  # frame 5: 0.2 s


def test_joined_and_late_starting_transport_streams_play_from_zero_every_frame_once(tmp_path):
    """Two recordings whose timestamps restart (two segments of 15 frames joined byte for byte), with and
    without audio, and a TS that starts at 1.5 s with its audio 0.2 s later. Before, the second segment's
    frames got timestamps one tick apart and were never shown (with audio: an internal failure), and the
    late TS played 1.5 s of nothing first. Now the second segment follows the first, every frame is shown
    once, in order, for a frame (40 ms), each beep sounds with its frame, and the output starts at zero with
    the late audio still 0.2 s after the pictures (as FFmpeg's command line writes them)."""
    clips = tmp_path / "clips"
    clips.mkdir()
    segments = [noise_frames(15, seed=1), noise_frames(15, seed=2)]
    joined_ts(clips / "joined.ts", segments, restart=True, audio=[("aac", "und")], beeps=[0.2, 0.48])
    joined_ts(clips / "silent.ts", segments, restart=True)
    late = noise_frames(20, seed=3)
    write_clip(clips / "late.ts", late, fps=FPS, times=[1.5 + n / FPS for n in range(20)], audio=[("aac", "und")],
               audio_span=(1.7, 2.3), beeps=[1.9])  # fmt: skip
    summaries = restore(clips, tmp_path / "out")
    out = tmp_path / "out"
    for stem in ("joined", "silent"):
        times = decoded_times(out / f"{stem}.mp4")
        assert len(times) == 30 and np.diff(times) == pytest.approx([0.04] * 29, abs=1e-3), (stem, times)
        assert shown_in_order(out / f"{stem}.mp4", segments[0] + segments[1]), stem
        assert summaries[stem]["timestamp_jumps"] == 1 and summaries[stem]["start_time"] > 1.3
    assert decoded_times(out / "silent.mp4")[0] == 0
    (track,) = audio_tracks(out / "joined.mp4")
    times = decoded_times(out / "joined.mp4")
    assert min(track["start"], times[0]) == 0  # the audio starts first (by its encoder delay), at zero
    assert beep_times(out / "joined.mp4") == pytest.approx([times[5], times[12], times[20], times[27]], abs=0.002)
    assert summaries["joined"]["streams"]["kept"] == ["audio 1 (aac): copied"]

    times = decoded_times(out / "late.mp4")
    (before,), (after,) = audio_tracks(clips / "late.ts"), audio_tracks(out / "late.mp4")
    assert times == pytest.approx([n / 25 for n in range(20)], abs=1e-3) and shown_in_order(out / "late.mp4", late)
    assert after["start"] - times[0] == pytest.approx(before["start"] - 1.5, abs=1e-3)  # 0.2 s less the encoder delay
    assert beep_times(out / "late.mp4") == pytest.approx([times[10]], abs=0.002)
    assert summaries["late"]["start_time"] == pytest.approx(1.5) and summaries["late"]["timestamp_jumps"] == 0
