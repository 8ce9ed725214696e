"""Footage as phones and cameras make it: rotation, variable frame rate, every audio track and
subtitles, pixel aspect ratio, size changes mid-stream, shared output folders, full disks, lost workers.

What is asserted is what a player shows of the output: its displayed size and orientation, every frame's
time, its audio tracks (decoded with PyAV). Inputs are generated (`tests/footage.py`).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from footage import (
    audio_tracks,
    decoded_times,
    noise_frames,
    sample_frames,
    stored,
    ts_with_size_change,
    vfr_times,
    worker_pids,
    write_clip,
)

from inference import main
from keep.errors import KeepError
from keep.paths import FileLock
from keep.pipeline.inputs import Input, outputs_of
from keep.video import VideoWriter, open_input, probe, write_image
from keep.video.io import ORIENTATIONS

REPO = Path(__file__).resolve().parent.parent
TINY = ["--model", "preset:tiny", "--flow", "dis", "--set", "overlap=threads"]

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny inputs: see conftest.one_thread


def summary_of(folder: Path, stem: str) -> dict:
    return json.loads((folder / f"{stem}_summary.json").read_text())


def displayed(path: Path) -> tuple[int, int, tuple[int, bool]]:
    """(width, height) as a player shows the video, and the turn it applies (0, False: none)."""
    info = probe(path)
    turns = info["orientation"][0]
    size = (info["height"], info["width"]) if turns % 2 else (info["width"], info["height"])
    return (*size, info["orientation"])


# ------------------------------------------------------------------------------------------ orientation
def test_every_display_orientation_reads_upright(tmp_path):
    """The 8 orientations a display matrix can ask for (EXIF's), each written by PyAV's own setter: the
    reader turns the stored frames upright; where the ffmpeg command line is installed, its autorotated
    frame (what `ffmpeg -i` and players show) is the same picture."""
    upright = np.zeros((48, 64, 3), np.uint8)
    upright[:16, :32] = 255  # a bright block top left: any wrong turn or mirror moves it
    upright[..., 1] = np.arange(64)[None] * 3
    for turns, mirror in ORIENTATIONS:
        clip = write_clip(tmp_path / f"o{turns}{int(mirror)}.mp4", [stored(upright, turns, mirror)] * 2,
                          rotation=(90 * turns, mirror))  # fmt: skip
        reader = open_input(clip)
        assert (reader.turns, reader.mirror, reader.width, reader.height) == (turns, mirror, 64, 48)
        frame = next(iter(reader)).rgb
        assert np.abs(frame.astype(int) - upright).mean() < 4, (turns, mirror)
        if shutil.which("ffmpeg") and not mirror:  # Debian's ffmpeg 5.1 autorotates turns (not mirrors)
            command = ["ffmpeg", "-v", "error", "-i", str(clip), "-frames:v", "1", "-f", "rawvideo"]
            command += ["-pix_fmt", "rgb24", "-"]
            shown = np.frombuffer(subprocess.run(command, capture_output=True, check=True).stdout, np.uint8)
            assert np.abs(shown.reshape(48, 64, 3).astype(int) - frame).mean() < 1


def test_a_portrait_phone_clip_finds_as_many_faces_as_upright_and_plays_the_same(tmp_path):
    """The sample stored as a phone stores it (pixels sideways, a rotation of -90 degrees in the container):
    faces are found in as many frames as in the upright clip, and the output is written upright, with no
    rotation, so a player shows it as it shows the input."""
    frames = sample_frames(20)
    upright = write_clip(tmp_path / "upright.mp4", frames, audio=[("aac", "und")])
    phone = write_clip(tmp_path / "phone.mp4", [stored(f, 3, False) for f in frames], rotation=(-90, False),
                       audio=[("aac", "und")])  # fmt: skip
    assert displayed(phone) == (176, 144, (3, False)) and probe(phone)["width"] == 144  # stored sideways
    for clip in (upright, phone):
        assert main(["-i", str(clip), "-o", str(tmp_path / "out"), *TINY]) == 0
    a, b = summary_of(tmp_path / "out", "upright"), summary_of(tmp_path / "out", "phone")
    assert b["frames_with_face"] >= a["frames_with_face"] >= 18 and b["small_faces_skipped"] == 0
    assert (b["rotation"], b["mirrored"]) == (270, False)
    assert displayed(tmp_path / "out" / "phone.mp4") == (176, 144, (0, False))
    first = next(iter(open_input(tmp_path / "out" / "phone.mp4"))).rgb.astype(int)
    upside_down, mirrored = np.abs(first - frames[0][::-1, ::-1]).mean(), np.abs(first - frames[0][:, ::-1]).mean()
    assert np.abs(first - frames[0]).mean() < min(upside_down, mirrored) / 3  # the input's picture, upright


def test_the_pixel_aspect_ratio_is_kept_and_turned_with_the_picture(tmp_path):
    frames = noise_frames(3)
    wide = write_clip(tmp_path / "wide.mp4", frames, sample_aspect=Fraction(2, 1))
    turned = write_clip(tmp_path / "turned.mp4", [stored(f, 1, False) for f in frames], rotation=(90, False),
                        sample_aspect=Fraction(1, 2))  # fmt: skip
    assert main(["-i", str(wide), "-o", str(tmp_path / "out"), *TINY, "--upscale", "2"]) == 0
    assert main(["-i", str(turned), "-o", str(tmp_path / "out"), *TINY]) == 0
    assert probe(tmp_path / "out" / "wide.mp4")["sample_aspect"] == 2  # 128x96 shown 256 wide, as 64x48 was
    assert probe(tmp_path / "out" / "turned.mp4")["sample_aspect"] == 2  # a 1:2 pixel stored is 2:1 upright
    assert summary_of(tmp_path / "out", "wide")["sample_aspect"] == "2"


# ------------------------------------------------------------------------------------------ timing
@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_variable_frame_rate_keeps_every_timestamp_and_the_audio_in_sync(suffix, tmp_path):
    """90 frames with a 0.3 s gap after frame 30 and late frames (a phone's recording): timestamps rescaled to
    1/fps collided and the muxer refused them part-way. Every frame keeps its time; the output's duration and
    audio are the input's. An .mkv input gives an .mkv output."""
    times = vfr_times(90)
    clip = write_clip(tmp_path / f"vfr{suffix}", noise_frames(90), times=times, audio=[("aac", "eng")])
    assert main(["-i", str(clip), "-o", str(tmp_path / "out"), *TINY, "--set", "preset=ultrafast"]) == 0
    output = tmp_path / "out" / f"vfr{suffix}"
    tolerance = 0.0011 if suffix == ".mkv" else 1e-4  # Matroska stores milliseconds
    assert decoded_times(output) == pytest.approx(decoded_times(clip), abs=tolerance)
    assert decoded_times(output) == pytest.approx(times, abs=tolerance)
    src, out = probe(clip), probe(output)
    assert out["frames"] == src["frames"] == 90
    assert out["duration"] == pytest.approx(src["duration"], abs=1 / 30)
    (before,), (after,) = audio_tracks(clip), audio_tracks(output)
    assert after["codec"] == "aac" and after["language"] == "eng"
    assert after["start"] == pytest.approx(before["start"], abs=1e-3)
    assert after["seconds"] == pytest.approx(before["seconds"], abs=1e-3)


def test_container_option_writes_matroska_for_an_mp4_input(tmp_path):
    clip = write_clip(tmp_path / "clip.mp4", noise_frames(3))
    assert main(["-i", str(clip), "-o", str(tmp_path / "out"), *TINY, "--set", "container=mkv"]) == 0
    with av.open(str(tmp_path / "out" / "clip.mkv")) as container:
        assert container.format.name.startswith("matroska") and container.streams.video[0].frames in (0, 3)
    assert main(["-i", str(clip), "-o", str(tmp_path / "out"), *TINY, "--set", "container=avi"]) == 2


# ------------------------------------------------------------------------------------------ streams
def test_every_audio_track_and_the_subtitles_are_kept(tmp_path, capsys):
    """Two audio tracks (AAC, and 8-bit PCM, which MP4 cannot hold), a subtitle track and its font. Matroska
    output (the input's container): all copied as they are. MP4 output: the PCM track re-encoded to AAC, the
    subtitle track and the font not kept, and the summary and the report say so."""
    subtitles, font = [(0.1, 0.5, "Hello"), (0.6, 0.65, "again")], [("font.ttf", b"glyphs")]
    clip = write_clip(tmp_path / "talk.mkv", noise_frames(20), audio=[("aac", "eng"), ("pcm_u8", "fra")],
                      subtitles=subtitles, attachments=font)  # fmt: skip
    before = audio_tracks(clip)
    assert main(["-i", str(clip), "-o", str(tmp_path / "mkv"), *TINY]) == 0
    streams = summary_of(tmp_path / "mkv", "talk")["streams"]
    assert streams == {
        "kept": [
            "audio 1 (aac, eng): copied",
            "audio 2 (pcm_u8, fra): copied",
            "subtitle 3 (subrip): copied",
            "attachment 4 (font.ttf): copied",
        ],
        "not_kept": [],
    }
    assert audio_tracks(tmp_path / "mkv" / "talk.mkv") == before
    with av.open(str(tmp_path / "mkv" / "talk.mkv")) as container:
        (subtitle,) = container.streams.subtitles
        (font,) = container.streams.attachments
        cues = [bytes(p) for p in container.demux(subtitle) if p.size]
        assert font.name == "font.ttf" and font.data == b"glyphs"
    assert cues == [b"Hello", b"again"]
    capsys.readouterr()
    assert main(["-i", str(clip), "-o", str(tmp_path / "mp4"), *TINY, "--set", "container=mp4"]) == 0
    streams = summary_of(tmp_path / "mp4", "talk")["streams"]
    assert streams["kept"][0] == "audio 1 (aac, eng): copied"
    assert streams["kept"][1].startswith("audio 2 (pcm_u8, fra): re-encoded to aac")
    assert streams["not_kept"] == [
        "subtitle 3 (subrip): the mp4 container cannot hold it",
        "attachment 4 (font.ttf): the mp4 container cannot hold it",
    ]
    assert "not kept: subtitle 3 (subrip)" in capsys.readouterr().out
    after = audio_tracks(tmp_path / "mp4" / "talk.mp4")
    assert [(t["codec"], t["language"]) for t in after] == [("aac", "eng"), ("aac", "fra")]
    for a, b in zip(before, after, strict=True):  # in sync, as long (AAC's last frame may pad a few ms)
        assert b["start"] == pytest.approx(a["start"], abs=0.002)
        assert b["seconds"] == pytest.approx(a["seconds"], abs=0.07)


# ------------------------------------------------------------------------------------------ size changes
def test_a_capture_whose_size_changes_is_scaled_with_one_warning(tmp_path, capsys):
    """An MPEG-TS capture switching from 176x144 to 352x288 after 10 frames: the later frames are scaled to the
    first size (as FFmpeg does), one warning line says so, the run goes on."""
    frames = sample_frames(20)
    large = [np.ascontiguousarray(np.repeat(np.repeat(f, 2, 0), 2, 1)) for f in frames[10:]]
    clip = ts_with_size_change(tmp_path / "capture.ts", frames[:10], large)
    assert main(["-i", str(clip), "-o", str(tmp_path / "out"), *TINY]) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "frame 10 is 352x288" in warnings[0] and "176x144" in warnings[0], err
    info = probe(tmp_path / "out" / "capture.mp4")
    assert (info["frames"], info["width"], info["height"]) == (20, 176, 144)
    assert summary_of(tmp_path / "out", "capture")["resized_frames"] == 10


def test_a_frames_folder_with_one_frame_of_another_size_goes_on(tmp_path, capsys):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(sample_frames(6)):
        write_image(folder / f"{i:03d}.png", frame if i != 3 else frame[:100])
    assert main(["-i", str(folder), "-o", str(tmp_path / "out"), *TINY]) == 0
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and "frame 3 (003.png) is 176x100" in err
    info = probe(tmp_path / "out" / "frames.mp4")
    assert (info["frames"], info["width"], info["height"]) == (6, 176, 144)


# ------------------------------------------------------------------------------------------ shared folders
def test_finished_means_the_summary_names_the_output_and_killed_runs_leave_nothing_in_the_way(tmp_path):
    out = outputs_of(Input(tmp_path / "clip.mp4", "video"), tmp_path / "out")
    out.main.parent.mkdir()
    out.main.write_bytes(b"a video")
    assert not out.finished()  # no summary: a file put there by hand (runs write the summary first)
    assert out.in_the_way(save_faces=False, save_frames=False) == out.main
    out.summary.write_text("someone's notes")
    assert out.in_the_way(save_faces=False, save_frames=False) == out.summary  # not a summary of ours
    out.summary.write_text(json.dumps({"input": "clip.mov", "output": str(out.main.with_suffix(".mkv"))}))
    assert out.in_the_way(save_faces=False, save_frames=False) == out.main  # ours, of another output
    out.summary.write_text(json.dumps({"input": "clip.mov", "output": str(out.main), "faces_log": None}))
    assert out.finished() and out.in_the_way(save_faces=False, save_frames=False) is None
    out.faces_log.write_text("someone's faces")
    assert out.in_the_way(save_faces=True, save_frames=False) == out.faces_log  # the summary does not name it
    with pytest.raises(KeepError, match="clip_faces.jsonl exists and was not written by KEEP"):
        out.check_replaceable(overwrite=False, save_faces=True, save_frames=False)
    out.check_replaceable(overwrite=True, save_faces=True, save_frames=False)
    stale = [out.partial("123-0badcafe"), out.main.with_name(".clip.partial.mp4")]
    others = [out.main.with_name(".clip.x.123-0badcafe.partial.mp4"), out.main.with_name(".clip.lock")]
    for path in stale + others:
        path.write_bytes(b"")
    assert sorted(out.stale_partials()) == sorted(stale)  # not another stem's ('clip.x'), not the lock


def test_a_second_lock_waits_or_says_busy(tmp_path):
    path = tmp_path / ".clip.lock"
    first, second = FileLock(path), FileLock(path)
    assert first.acquire(wait=False)
    assert not second.acquire(wait=False)
    first.release()
    assert not path.exists() and second.acquire(wait=False)
    second.release()


def run_inference(*args: str, timeout: int = 180, **popen) -> subprocess.Popen:
    env = {**os.environ, "KEEP_OFFLINE": "1", "KEEP_DEBUG": "", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(REPO / "inference.py"), *args]
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **popen)  # fmt: skip


def finish(process: subprocess.Popen, timeout: int = 180) -> tuple[int, str, str]:
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
        pytest.fail(f"inference.py did not end within {timeout} s: {stderr[-2000:]}")
    return process.returncode, stdout, stderr


def test_two_runs_on_the_same_output_share_it(tmp_path):
    """A script started twice: both end well, the output is written once and complete, and nothing else is
    left in the folder (before: one run failed on the other's partial file, or the output was corrupt)."""
    clip = write_clip(tmp_path / "clip.mp4", sample_frames(40), audio=[("aac", "und")])
    out = tmp_path / "out"
    args = ["-i", str(clip), "-o", str(out), *TINY, "--threads", "1"]
    runs = [run_inference(*args) for _ in range(2)]
    results = [finish(run) for run in runs]
    for rc, _, stderr in results:
        assert rc == 0 and "error:" not in stderr, stderr[-2000:]
    lines = [line for _, stdout, _ in results for line in stdout.splitlines()]
    assert sum(line.startswith("done:") for line in lines) == 1
    assert sum(line.startswith("skipped:") for line in lines) == 1
    assert sorted(p.name for p in out.iterdir()) == ["clip.mp4", "clip_summary.json"]
    assert probe(out / "clip.mp4")["frames"] == 40 and audio_tracks(out / "clip.mp4")[0]["seconds"] > 1


def test_a_file_keep_did_not_write_is_never_replaced_without_overwrite(tmp_path):
    """A `clip.mp4` beside `clip.mov` with `-o` the same folder, and an earlier `a.mp4` in a folder run's output
    folder: each is refused in one line and kept byte for byte (the folder run restores the other input); with
    --overwrite the file is replaced."""
    frames = sample_frames(8)
    clip = write_clip(tmp_path / "clip.mov", frames)
    (tmp_path / "clip.mp4").write_bytes(b"someone's own video")
    videos, out = tmp_path / "videos", tmp_path / "out"
    videos.mkdir()
    for name in ("a", "b"):
        write_clip(videos / f"{name}.mp4", frames)
    out.mkdir()
    (out / "a.mp4").write_bytes(b"an earlier file")
    small = [*TINY, "--threads", "1"]
    runs = [run_inference("-i", str(source), "-o", str(folder), *small) for source, folder in ((clip, tmp_path),
                                                                                            (videos, out))]  # fmt: skip
    (single, _, single_err), (folder, folder_out, folder_err) = [finish(run) for run in runs]
    for rc, stderr, path in ((single, single_err, tmp_path / "clip.mp4"), (folder, folder_err, out / "a.mp4")):
        errors = [line for line in stderr.splitlines() if line.startswith("error:")]
        assert rc == 2 and len(errors) == 1 and "Traceback" not in stderr, stderr[-2000:]
        assert f"{path} exists and was not written by KEEP" in errors[0] and "--overwrite" in errors[0]
    assert (tmp_path / "clip.mp4").read_bytes() == b"someone's own video"
    assert (out / "a.mp4").read_bytes() == b"an earlier file"
    assert "2 inputs: 1 restored, 0 skipped (output exists), 1 failed" in folder_out
    assert sorted(p.name for p in out.iterdir()) == ["a.mp4", "b.mp4", "b_summary.json"]
    assert main(["-i", str(clip), "-o", str(tmp_path), *small, "--overwrite"]) == 0
    assert probe(tmp_path / "clip.mp4")["frames"] == 8
    assert summary_of(tmp_path, "clip")["output"] == str(tmp_path / "clip.mp4")


# ------------------------------------------------------------------------------------------ resources
def test_a_full_disk_is_one_line_naming_the_output_and_leaves_nothing(tmp_path):
    """The output folder on a 96 kB tmpfs (mounted in a mount namespace of its own, so nothing outlives the
    test): the encoder's write fails with ENOSPC part-way."""
    if not shutil.which("unshare") or not shutil.which("mount"):
        pytest.skip("unshare / mount not available")
    out = tmp_path / "small"
    out.mkdir()
    clip = write_clip(tmp_path / "clip.mp4", sample_frames(60))
    probe_mount = subprocess.run(["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=96k tmpfs {out}"],
                                 capture_output=True)  # fmt: skip
    if probe_mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {probe_mount.stderr.decode().strip()}")
    env = {**os.environ, "KEEP_OFFLINE": "1", "KEEP_DEBUG": "", "OMP_NUM_THREADS": "1"}
    inference = f"{sys.executable} {REPO / 'inference.py'} -i {clip} -o {out} {' '.join(TINY)} --set crf=0"
    script = f'mount -t tmpfs -o size=96k tmpfs {out} && {inference}; echo "rc=$?"; ls -A {out}'
    result = subprocess.run(["unshare", "-m", "sh", "-c", script], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=180)  # fmt: skip
    listing = result.stdout.strip().splitlines()
    assert "rc=2" in listing, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "No space left on device" in errors[0] and str(out / "clip.mp4") in errors[0]
    assert "Traceback" not in result.stderr and "internal failure" not in result.stderr
    assert listing[listing.index("rc=2") + 1 :] == []  # neither output, partial file nor lock


def test_a_missing_encoder_is_one_line(tmp_path, monkeypatch):
    import keep.video.encoding

    monkeypatch.setattr(keep.video.encoding, "H264", "h264_nonexistent")
    with pytest.raises(KeepError, match="has no h264_nonexistent encoder"):
        VideoWriter(tmp_path / "out.mp4", width=64, height=48, fps=Fraction(25))


def started_restoring(out: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    """Wait until a partial output exists: the first restored frames reached the encoder, the workers are
    running and their queues fill. The callers' clips are long enough (300 frames: restoring them takes seconds
    with the tiny network) for the run to be still going when they act."""
    deadline = time.monotonic() + timeout
    while not any(p.name.endswith(".partial.mp4") for p in out.glob(".*")):
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"the run did not start restoring: {process.communicate()[1][-2000:]}")
        time.sleep(0.05)


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_a_killed_worker_is_one_line_and_leaves_nothing(tmp_path):
    clip = write_clip(tmp_path / "clip.mp4", sample_frames(300))
    out = tmp_path / "out"
    run = run_inference("-i", str(clip), "-o", str(out), "--model", "preset:tiny", "--flow", "dis", "--threads", "1")
    started_restoring(out, run)
    os.kill(worker_pids(run.pid)[-1], signal.SIGKILL)  # as the out-of-memory killer does
    rc, _, stderr = finish(run)
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert rc == 2 and len(errors) == 1 and stderr.strip().splitlines()[-1] == errors[0], stderr[-2000:]
    assert "killed by SIGKILL" in errors[0] and str(clip) in errors[0]
    assert not out.exists()  # nothing left, not even the folder the run made


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_sigterm_to_every_process_of_the_run_is_ctrl_c_and_leaves_nothing(tmp_path):
    """SIGTERM to the run's process group, as systemd and Slurm stop a job (docker and Kubernetes signal the
    main process alone, which this includes), with the workers' queues full: the workers leave the stopping to
    the main process, which removes the partial output and the lock and ends with one line, exit 130."""
    clip = write_clip(tmp_path / "clip.mp4", sample_frames(300))
    out = tmp_path / "out"
    run = run_inference("-i", str(clip), "-o", str(out), "--model", "preset:tiny", "--flow", "dis", "--threads", "1",
                        start_new_session=True)  # fmt: skip
    started_restoring(out, run)
    workers = worker_pids(run.pid)
    os.killpg(run.pid, signal.SIGTERM)
    rc, _, stderr = finish(run)
    assert rc == 130 and stderr.strip().splitlines()[-1] == "interrupted by SIGTERM", stderr[-2000:]
    assert "error:" not in stderr and "Traceback" not in stderr
    assert not out.exists()  # neither output, partial file, lock nor the folder the run made
    deadline = time.monotonic() + 30
    while any(running(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(running(pid) for pid in workers)


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_after_sigkill_of_the_main_process_no_semaphore_is_leaked(tmp_path):
    """The workers notice their parent is gone and exit; multiprocessing's resource tracker then finds no
    semaphore left to clean up (before: "There appear to be 14 leaked semaphore objects")."""
    clip = write_clip(tmp_path / "clip.mp4", sample_frames(300))
    out = tmp_path / "out"
    run = run_inference("-i", str(clip), "-o", str(out), "--model", "preset:tiny", "--flow", "dis", "--threads", "1")
    started_restoring(out, run)
    workers = worker_pids(run.pid)
    assert len(workers) == 2
    run.kill()
    _, stderr = run.communicate(timeout=60)  # stderr ends when the workers and the tracker have exited
    assert "leaked" not in stderr and "Traceback" not in stderr, stderr[-2000:]
    deadline = time.monotonic() + 30  # the workers closed their output; their exit may take a moment more
    while any(running(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(running(pid) for pid in workers)


def running(pid: int) -> bool:
    """A process that exists and is not a zombie waiting to be reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False
