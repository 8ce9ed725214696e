"""A failure part-way through a run ends the process with its one `error:` line, in every overlap mode
(in `--set overlap=processes` the process could print the error and then wait forever for its
queues to flush into workers that had stopped).

Real subprocesses under a timeout, on inputs long enough that every queue is full when the error strikes:
150 frames of the talking-face sample with faces in every frame, the bad frame at index 60.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import av
import pytest

from keep.video import write_image

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "assets" / "carphone_sample.mp4"
TINY = ["--model", "preset:tiny", "--flow", "dis"]
BAD_FRAME = 60
TIMEOUT_S = 240


def frames_folder(folder: Path, count: int = 150, bad: int | None = BAD_FRAME) -> Path:
    """`count` frames of the sample clip (looped) as PNGs; frame `bad` is a file no decoder reads."""
    with av.open(str(SAMPLE)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    folder.mkdir(parents=True)
    for i in range(count):
        path = folder / f"{i:04d}.png"
        if i == bad:
            path.write_bytes(b"\x89PNG\r\n\x1a\n but not an image")
        else:
            write_image(path, frames[i % len(frames)])
    return folder


def run_inference(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "KEEP_OFFLINE": "1", "KEEP_DEBUG": ""}
    try:
        return subprocess.run(
            [sys.executable, str(REPO / "inference.py"), *args],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT_S,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"inference.py did not exit within {TIMEOUT_S} s: {exc.stderr}")


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize("overlap", ["processes", "threads", "off"])
def test_a_failure_after_frame_50_ends_the_run(overlap, tmp_path):
    source = frames_folder(tmp_path / "frames")
    out = tmp_path / "out"
    result = run_inference("-i", str(source), "-o", str(out), *TINY, "--set", f"overlap={overlap}")
    assert result.returncode == 2, result.stderr[-3000:]
    errors = error_lines(result.stderr)
    assert len(errors) == 1 and f"{BAD_FRAME:04d}.png" in errors[0], result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert not out.exists()  # neither the output, its partial file nor the folder the run made


def test_a_folder_goes_on_after_a_failing_input_and_exits_2(tmp_path):
    inputs = tmp_path / "inputs"
    frames_folder(inputs / "a_broken")
    frames_folder(inputs / "b_good", count=30, bad=None)
    out = tmp_path / "out"
    result = run_inference("-i", str(inputs), "-o", str(out), *TINY)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "2 inputs: 1 restored, 0 skipped (output exists), 1 failed" in result.stdout
    errors = error_lines(result.stderr)
    assert len(errors) == 1 and "a_broken" in errors[0] and "Traceback" not in result.stderr
    assert sorted(p.name for p in out.glob("*.mp4")) == ["b_good.mp4"]
