"""Inputs read as a user means them: a folder of videos that also holds a photo and a note, a phone photo
stored sideways with an EXIF orientation, a 4000x200 strip of faces, a face seen in two frames only.

One `inference.py` run (a real process under a timeout) over a mixed folder holding all of them; each
test reads what it wrote back by decoding it. The unit tests around it are in-process and fast.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from footage import REPO, sample_frames, stored, write_clip

from keep.errors import KeepError
from keep.image import EXIF_ORIENTATIONS, read_image, read_upright, write_image
from keep.pipeline.inputs import collect_inputs

STRIP = (200, 4000)  # height, width
STRIP_FRAMES = 3
BLIP_FRAMES, BLIP = 8, (3, 4)  # a second face shows in frames 3 and 4 only
RUN_TIMEOUT_S = 600


def decode(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def strip(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """`frame` at its own size, repeated side by side along a `height x width` gray strip (centred across it)."""
    out = np.full((height, width, 3), 110, np.uint8)
    top = (height - frame.shape[0]) // 2
    for x in range(0, width - frame.shape[1] + 1, frame.shape[1]):
        out[top : top + frame.shape[0], x : x + frame.shape[1]] = frame
    return out


def write_exif_jpeg(path: Path, rgb: np.ndarray, orientation: int) -> None:
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(rgb).save(path, quality=95, exif=exif.tobytes())


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> dict:
    """`inference.py` over a folder of two short videos, one photo and a note; what it wrote."""
    root = tmp_path_factory.mktemp("mixed")
    media = root / "media"
    media.mkdir()
    frames = sample_frames(BLIP_FRAMES)
    write_clip(media / "strip.mp4", [strip(f, *STRIP) for f in frames[:STRIP_FRAMES]])
    gray = np.full_like(frames[0], 110)
    blip = [np.concatenate([f, f if t in BLIP else gray], axis=1) for t, f in enumerate(frames)]
    write_clip(media / "blip.mp4", blip)
    turns, mirror = EXIF_ORIENTATIONS[6]  # a phone held upright: stored a quarter turn clockwise off
    write_exif_jpeg(media / "photo.jpg", stored(frames[0], turns, mirror), 6)
    (media / "notes.txt").write_text("shot on a phone\n")
    out = root / "out"
    command = [
        sys.executable, str(REPO / "inference.py"), "-i", str(media), "-o", str(out), "--model", "preset:tiny",
        "--detector", "retinaface_mobilenet", "--flow", "dis", "--threads", "1",
        "--set", "overlap=threads", "crf=0", "preset=ultrafast",
    ]  # fmt: skip
    env = {**os.environ, "KEEP_OFFLINE": "1", "KEEP_DEBUG": "1"}
    result = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert result.returncode == 0, result.stderr[-3000:]
    summaries = {p.name.removesuffix("_summary.json"): json.loads(p.read_text()) for p in out.glob("*_summary.json")}
    return {"media": media, "out": out, "stdout": result.stdout, "summaries": summaries, "frames": frames}


def test_a_mixed_folder_restores_its_videos_and_its_photo_and_lists_what_it_skipped(mixed):
    out, stdout = mixed["out"], mixed["stdout"]
    assert sorted(p.name for p in out.iterdir()) == [
        "blip.mp4", "blip_summary.json", "photo.png", "photo_summary.json", "strip.mp4", "strip_summary.json"
    ]  # fmt: skip
    assert "3 inputs: 3 restored, 0 skipped (output exists), 0 failed" in stdout
    skipped = [line for line in stdout.splitlines() if line.startswith("skipped")]
    assert skipped == [f"skipped 1 entry that is neither an image, a video nor a folder of frames in {mixed['media']}: "
                       "notes.txt"]  # fmt: skip
    assert len(decode(out / "blip.mp4")) == BLIP_FRAMES and len(decode(out / "strip.mp4")) == STRIP_FRAMES


def test_a_photo_with_an_exif_orientation_is_restored_upright(mixed):
    upright = mixed["frames"][0]
    restored = read_image(mixed["out"] / "photo.png")
    assert restored.shape == upright.shape  # 176 wide, 144 high: as shown, not as stored
    difference = np.abs(restored.astype(int) - upright.astype(int)).mean(-1)
    assert np.median(difference) < 3  # the background is the photo's (JPEG noise), the right way up
    photo = [line for line in mixed["stdout"].splitlines() if "photo.jpg" in line]
    assert any("turned upright by its EXIF orientation" in line for line in photo), mixed["stdout"]
    assert any(line.startswith("done: 1 frames, 1 faces in 1 tracks") for line in mixed["stdout"].splitlines())


def test_a_4000x200_strip_has_its_faces_found_in_every_frame(mixed):
    summary = mixed["summaries"]["strip"]
    copies = STRIP[1] // 176  # 22 faces side by side, each about 65 px (as in the 176x144 clip)
    assert summary["frames_with_face"] == summary["frames"] == STRIP_FRAMES
    assert summary["faces"] == copies * STRIP_FRAMES and summary["tracks"] == copies
    assert (summary["detector"], summary["short_tracks"]) == ("retinaface_mobilenet", {})


def test_a_two_frame_track_is_not_restored_and_the_real_one_is(mixed):
    summary = mixed["summaries"]["blip"]
    assert summary["min_track"] == 4
    assert list(summary["short_tracks"].values()) == [len(BLIP)]  # found by the detector, left alone
    assert summary["track_frames"] == {"0": BLIP_FRAMES}  # the real face, its id unchanged
    restored, source = decode(mixed["out"] / "blip.mp4"), decode(mixed["media"] / "blip.mp4")
    for t in range(BLIP_FRAMES):
        right = np.abs(restored[t][:, 176:].astype(int) - source[t][:, 176:].astype(int))
        assert right.mean() < 2 and np.percentile(right, 99) <= 8, t  # the input's pixels (4:2:0 rounding only)
    face = np.abs(restored[4][40:110, 50:130].astype(int) - source[4][40:110, 50:130].astype(int))
    assert face.mean() > 5  # the real face was restored (by random weights: changed)


# ------------------------------------------------------------------------------------------ in-process
@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp", ".tiff"])
def test_every_exif_orientation_is_read_upright(tmp_path, suffix):
    """A picture stored as each of EXIF's 8 orientations says it is stored, for every format that carries the
    tag, comes back as the upright picture (OpenCV turns some of them itself, depending on format and flag)."""
    from PIL import Image

    upright = cv2.resize(sample_frames(1)[0], (60, 40), interpolation=cv2.INTER_AREA)
    for orientation, (turns, mirror) in EXIF_ORIENTATIONS.items():
        exif = Image.Exif()
        exif[0x0112] = orientation
        path = tmp_path / f"o{orientation}{suffix}"
        Image.fromarray(stored(upright, turns, mirror)).save(path, exif=exif.tobytes(), quality=100, lossless=True)
        rgb, found = read_upright(path)
        assert found == orientation and rgb.shape == upright.shape, (orientation, rgb.shape)
        assert np.abs(rgb.astype(int) - upright.astype(int)).mean() < 2, orientation


def test_photos_without_an_orientation_are_read_as_stored(tmp_path):
    rgb = sample_frames(1)[0]
    write_image(tmp_path / "plain.png", rgb)
    (tmp_path / "garbage.jpg").write_bytes(b"\xff\xd8 not really a JPEG")
    assert read_upright(tmp_path / "plain.png")[1] == 1 and (read_image(tmp_path / "plain.png") == rgb).all()
    with pytest.raises(KeepError, match="garbage.jpg"):
        read_image(tmp_path / "garbage.jpg")


def test_what_a_folder_is(tmp_path):
    """Images alone (and files that are no media, and hidden files): one clip. Anything beside videos or
    frame folders: each video, frame folder and image its own input, the rest listed as skipped."""
    frames = tmp_path / "frames"
    frames.mkdir()
    for name in ("0001.png", "0002.png", "._0001.png", ".DS_Store", "README.txt"):
        (frames / name).write_bytes(b"")
    collected = collect_inputs(frames)
    assert [(i.source.name, i.kind) for i in collected.items] == [("frames", "frames")] and collected.folder is None
    assert [p.name for p in collected.skipped] == ["README.txt"]
    mixed = tmp_path / "mixed"
    (mixed / "shots").mkdir(parents=True)
    (mixed / "empty").mkdir()
    for name in ("b.mp4", "a.MOV", "cover.JPG", "shots/1.png", "notes.txt", ".hidden.mp4"):
        (mixed / name).write_bytes(b"")
    collected = collect_inputs(mixed)
    assert [(i.source.name, i.kind) for i in collected.items] == [
        ("a.MOV", "video"), ("b.mp4", "video"), ("cover.JPG", "image"), ("shots", "frames")
    ]  # fmt: skip
    assert collected.folder == mixed and [p.name for p in collected.skipped] == ["empty", "notes.txt"]
    assert collected.skipped_line().endswith(": empty/, notes.txt")
    (mixed / "b.png").write_bytes(b"")
    with pytest.raises(KeepError, match="b.mp4 and b.png .* would write the same outputs"):
        collect_inputs(mixed)
