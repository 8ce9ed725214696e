"""The default detector, offline, finds and restores the face of the project's clips.

The real command line, as a user runs it: `inference.py -i CLIP -o OUT --model preset:tiny` (random
tiny network: the released weights are not downloadable offline), default `--detector auto`. Without the
bundled RetinaFace, offline `auto` would fall back to dlib, which finds no face in any frame of the distorted clip.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("clip, least", [("carphone_distorted", 0.90), ("carphone_pristine", 0.95)])
def test_default_detector_restores_the_face_in_most_frames(shared_dir, tmp_path, clip, least):
    env = {**os.environ, "KEEP_OFFLINE": "1", "OMP_NUM_THREADS": "1"}  # one thread: faster on a shared machine
    args = ["-i", str(shared_dir / "media" / f"{clip}.mp4"), "-o", str(tmp_path), "--model", "preset:tiny"]
    run = subprocess.run(
        [sys.executable, "inference.py", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr[-2000:]
    summary = json.loads((tmp_path / f"{clip}_summary.json").read_text())
    assert summary["detector"] in ("retinaface_mobilenet", "retinaface_resnet50")  # offline: ours
    assert summary["frames_with_face"] / summary["frames"] >= least, summary
    assert summary["tracks"] == 1  # one talking face, one track
