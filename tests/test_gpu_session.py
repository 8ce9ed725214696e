"""benchmarks/gpu_session.sh, every GPU measurement of the lab in one command, in its smoke mode: every step on
the CPU with the tiny network and 2 frames, so that the script cannot rot between the sessions that have a GPU.
A lab test (`python -m pytest -m lab`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.lab


@pytest.mark.skipif(sys.platform == "win32", reason="a bash script")
def test_gpu_session_smoke_run(tmp_path):
    env = {**os.environ, "KEEP_GPU_SESSION_SMOKE": "1", "OUT": str(tmp_path), "PYTHON": sys.executable}
    proc = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_session.sh")], env=env, capture_output=True, text=True, timeout=240
    )
    log = (tmp_path / "session.log").read_text()
    assert proc.returncode == 0, log[-3000:]
    assert "steps that did not pass: 0" in log
    for step in ("golden", "agreement", "profile_fp16", "speed", "pipeline", "compile"):
        assert f"== {step}: exit 0" in log
    # what comes back from a device: at most 8 files, named in letters, digits, '.', '_' and '-'
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["profile_fp16.md", "results.tar.gz", "session.log", "trace_fp16.json.gz"]
    with tarfile.open(tmp_path / "results.tar.gz") as tar:
        results = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
        speed = json.load(tar.extractfile(results["speed.json"]))
        agreement = json.load(tar.extractfile(results["agreement.json"]))
    assert {"pipeline.json", "speed_compiled.json"} <= set(results)
    assert [(r["precision"], r["batch"], r["group_norm_fp32"]) for r in speed] == [
        ("fp32", 1, False), ("bf16", 1, False), ("fp16", 1, False), ("fp16", 1, True)
    ]  # fmt: skip
    assert set(agreement["code_agreement"]) == {"tf32", "bf16", "fp16"}
    assert "| precision | group norm | batch |" in log
