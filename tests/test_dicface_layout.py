"""DicFace's VFHQ-Test release layout (GT frame folders, `<clip>.txt` landmark files, the clip list) aligned
into the clips test.py reads (keep/evaluation/dicface.py, scripts/make_test_set.py --dicface_*), on a tiny
synthetic copy: faces placed in the frames by known similarity transforms, so the aligned result is known."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data

from keep.errors import KeepError
from keep.evaluation.dicface import align_release, read_clip_list, read_landmarks
from keep.face.align import template
from keep.image import list_images, read_image, write_image

REPO = Path(__file__).resolve().parent.parent
FRAMES = 3


def aligned_face(size: int = 512) -> np.ndarray:
    return cv2.resize(skimage.data.astronaut()[0:400, 60:460], (size, size), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """<rel>/GT/<clip>/*.png (512, the face moved by a similarity per frame), <rel>/LQ/<clip>/*.png (x4
    smaller), <rel>/landmarks/<clip>.txt (the template points moved the same way), <rel>/vfhq_test.txt."""
    rel = tmp_path_factory.mktemp("dicface")
    face, rng = aligned_face(), np.random.default_rng(0)
    lines = []
    for clip in ("Clip+aaa+P0+C0+F1-3", "Clip+bbb+P1+C0+F4-6"):
        rows = []
        for folder in ("GT", "LQ"):
            (rel / folder / clip).mkdir(parents=True)
        for t in range(FRAMES):
            angle, scale, shift = rng.uniform(-15, 15), rng.uniform(0.8, 1.0), rng.uniform(-30, 30, 2)
            move = cv2.getRotationMatrix2D((256, 256), angle, scale)
            move[:, 2] += shift
            frame = cv2.warpAffine(face, move, (512, 512), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
            write_image(rel / "GT" / clip / f"{t:08d}.png", frame)
            write_image(rel / "LQ" / clip / f"{t:08d}.png", cv2.resize(frame, (128, 128), interpolation=cv2.INTER_AREA))
            points = template(512) @ move[:, :2].T + move[:, 2]
            rows.append(" ".join(f"{v:.4f}" for v in points.ravel()))
        (rel / "landmarks").mkdir(exist_ok=True)
        (rel / "landmarks" / f"{clip}.txt").write_text("\n".join(rows) + "\n")
        lines.append(f"/data/VFHQ/test/{clip}/{FRAMES}")
    (rel / "vfhq_test.txt").write_text("\n".join(lines) + "\n")
    return rel


def test_release_aligns_into_the_clips_test_py_reads(release, tmp_path):
    assert read_clip_list(release / "vfhq_test.txt") == [("Clip+aaa+P0+C0+F1-3", 3), ("Clip+bbb+P1+C0+F4-6", 3)]
    assert read_landmarks(release / "landmarks" / "Clip+aaa+P0+C0+F1-3.txt").shape == (FRAMES, 5, 2)
    clips = align_release(
        release / "GT", release / "landmarks", tmp_path, clip_list=release / "vfhq_test.txt", lq=release / "LQ"
    )
    assert clips == ["Clip+aaa+P0+C0+F1-3", "Clip+bbb+P1+C0+F4-6"]
    face = aligned_face().astype(np.float64)
    small = cv2.resize(aligned_face(), (128, 128), interpolation=cv2.INTER_AREA).astype(np.float64)
    for clip in clips:
        gt, lq = list_images(tmp_path / "GT" / clip), list_images(tmp_path / "LQ" / clip)
        assert [p.name for p in gt] == [p.name for p in lq] == [f"{t:08d}.png" for t in range(FRAMES)]
        for g, q in zip(gt, lq, strict=True):
            g, q = read_image(g).astype(np.float64), read_image(q).astype(np.float64)
            assert g.shape == (512, 512, 3) and q.shape == (128, 128, 3)
            assert np.abs(g - face)[96:416, 96:416].mean() < 4  # the face back on the template
            assert np.abs(q - small)[24:104, 24:104].mean() < 6


def test_release_errors_are_one_line(release, tmp_path):
    bad = tmp_path / "landmarks"
    bad.mkdir()
    (bad / "Clip+aaa+P0+C0+F1-3.txt").write_text("1 2 3 4 5 6 7 8 9\n")
    with pytest.raises(KeepError, match=r"line 1: expected 10 numbers"):
        align_release(release / "GT", bad, tmp_path / "out")
    (tmp_path / "list.txt").write_text("/data/Clip+aaa+P0+C0+F1-3/40\n")
    with pytest.raises(KeepError, match=r"3 frames in .*the clip list says 40"):
        align_release(release / "GT", release / "landmarks", tmp_path / "out", clip_list=tmp_path / "list.txt")
    (tmp_path / "list.txt").write_text("no count here\n")
    with pytest.raises(KeepError, match="expected '<clip path>/<number of frames>'"):
        read_clip_list(tmp_path / "list.txt")


def test_make_test_set_aligns_the_release_and_synthesises_dicface_lq(release, tmp_path):
    """The command a user runs: GT aligned from the release, LQ synthesised with DicFace's degradation."""
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(REPO / "scripts" / "make_test_set.py"), "--root", str(tmp_path / "set")]
    command += ["--protocol", "dicface", "--threads", "1", "--dicface_gt", str(release / "GT")]
    command += ["--dicface_landmarks", str(release / "landmarks"), "--dicface_list", str(release / "vfhq_test.txt")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "aligned 2 clips" in done.stdout and "protocol dicface" in done.stdout
    for clip in ("Clip+aaa+P0+C0+F1-3", "Clip+bbb+P1+C0+F4-6"):
        assert read_image(tmp_path / "set" / "LQ" / clip / "00000002.png").shape == (128, 128, 3)
    into_input = subprocess.run(
        [*command[:2], "--root", str(release), *command[4:]], capture_output=True, text=True, timeout=300, env=env
    )
    assert (
        into_input.returncode == 2 and into_input.stderr.startswith("error:") and "Traceback" not in into_input.stderr
    )
