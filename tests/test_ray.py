"""A folder restored on Ray (`--set engine=ray`, keep/pipeline/ray_engine.py): the outputs one process writes,
a killed worker's video restored again, a video that fails for its own reason reported once, a re-run that
restores nothing; Ray stays optional. Each Ray test starts one Ray (seconds): the command-line test a cluster
it joins through RAY_ADDRESS, the Python test a local Ray of its own."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from footage import SAMPLE, sample_frames, write_clip

from inference import main
from keep.errors import KeepError
from keep.pipeline import PipelineOptions, collect_inputs, restore_inputs
from keep.pipeline.ray_engine import worker_device, workers_wanted

REPO = Path(__file__).resolve().parent.parent
# Lossless output (crf 0) and one thread: every process restores the same frames bit for bit.
FAST = [
    "--detector",
    "dlib",
    "--flow",
    "dis",
    "--threads",
    "1",
    "--set",
    "overlap=threads",
    "crf=0",
    "preset=ultrafast",
]
RAY = ["--set", "engine=ray", "ray_workers=2", "ray_cpus=1"]
LONG = "long"  # the clip a worker is killed on: the largest, so handed out first


def decode(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict:
    """Six short clips of the sample (one longer), a tiny network with fixed weights, and what one process
    restores from them."""
    import keep

    root = tmp_path_factory.mktemp("ray")
    videos = root / "videos"
    videos.mkdir()
    write_clip(videos / f"{LONG}.mp4", sample_frames(40))
    for i in range(5):
        write_clip(videos / f"c{i}.mp4", sample_frames(6, start=8 * i + 3))
    torch.manual_seed(0)
    weights = root / "tiny.pth"
    keep.save_checkpoint(weights, keep.load_network("preset:tiny"))
    threads = torch.get_num_threads()
    assert main(["-i", str(videos), "-o", str(root / "one"), "--model", str(weights), "--device", "cpu", *FAST]) == 0
    torch.set_num_threads(threads)
    reference = {path.stem: decode(path) for path in (root / "one").glob("*.mp4")}
    assert sorted(reference) == ["c0", "c1", "c2", "c3", "c4", LONG] and len(reference[LONG]) == 40
    return {"videos": videos, "weights": weights, "reference": reference}


def manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def assert_same_as_one_process(out: Path, reference: dict, stems) -> None:
    for stem in stems:
        frames = decode(out / f"{stem}.mp4")
        assert len(frames) == len(reference[stem]), stem
        assert all(np.array_equal(a, b) for a, b in zip(frames, reference[stem], strict=True)), stem


def lock_holder(lock: Path) -> int | None:
    """The process that holds `lock` open (the worker restoring its output), from /proc."""
    target = str(lock.resolve())
    for fd in Path("/proc").glob("[0-9]*/fd/*"):
        try:
            if os.readlink(fd) == target:
                return int(fd.parts[2])
        except OSError:
            continue
    return None


def kill_while_restoring(out: Path, stem: str, run: subprocess.Popen, timeout: float = 240) -> int:
    """SIGKILL the worker that restores `stem` once its partial output is being written; its process id."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and run.poll() is None:
        if list(out.glob(f".{stem}.*.partial.mp4")):
            pid = lock_holder(out / f".{stem}.lock")
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
                return pid
        time.sleep(0.02)
    raise AssertionError(f"{stem} was never seen being restored (run ended: {run.poll()})")


def test_a_folder_on_a_ray_cluster_survives_a_killed_worker_and_a_rerun_restores_nothing(media, tmp_path):
    """inference.py joins a running Ray (RAY_ADDRESS) with two CPU workers; the worker restoring the long clip
    is killed (SIGKILL) midway: that clip is restored again on another worker (attempts 2), every output is
    complete and equal to one process's, nothing partial is left. The same command again restores nothing."""
    pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    out = tmp_path / "out"
    command = [sys.executable, str(REPO / "inference.py"), "-i", str(media["videos"]), "-o", str(out)]
    command += ["--model", str(media["weights"]), "--device", "cpu", *FAST, *RAY]
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    env = {**os.environ, "RAY_ADDRESS": cluster.address, "KEEP_OFFLINE": "1"}
    try:
        with open(tmp_path / "stdout", "w") as stdout, open(tmp_path / "stderr", "w") as stderr:
            run = subprocess.Popen(command, cwd=REPO, env=env, stdout=stdout, stderr=stderr, text=True)
            try:
                killed = kill_while_restoring(out, LONG, run)
                run.wait(timeout=400)
            finally:
                run.kill()
    finally:
        cluster.shutdown()
    printed, errors = (tmp_path / "stdout").read_text(), (tmp_path / "stderr").read_text()
    assert run.returncode == 0, errors[-3000:]
    assert "6 inputs: 6 restored, 0 skipped (output exists), 0 failed" in printed
    assert errors.count(f"died restoring {media['videos'] / LONG}.mp4") == 1
    assert not [line for line in errors.splitlines() if line.startswith("error:")]
    records = {Path(r["input"]).stem: r for r in manifest(out)}
    assert len(manifest(out)) == 6 and all(r["status"] == "done" for r in records.values())
    assert records[LONG]["attempts"] == 2 and len(records[LONG]["lost"]) == 1
    assert records[LONG]["pid"] != killed and records[LONG]["frames"] == 40
    assert all(r["attempts"] == 1 and not r["lost"] for stem, r in records.items() if stem != LONG)
    assert f"died restoring {LONG}.mp4" in printed and "ray: 6 videos on" in printed  # the per-worker lines
    assert_same_as_one_process(out, media["reference"], records)
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []  # no partial file, no lock

    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.mp4")}
    again = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "6 inputs: 0 restored, 6 skipped" in again.stdout, again.stderr[-2000:]
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.mp4")} == before
    assert [r["status"] for r in manifest(out)[6:]] == ["skipped"] * 6


def test_from_python_on_a_local_ray_a_failing_video_is_reported_once(media, tmp_path, monkeypatch, capsys):
    """`restore_inputs` with engine=ray starts a local Ray (no address given) and leaves it at the end; a
    corrupt video is one `error:` line and one manifest line, tried once; the other equals one process's."""
    ray = pytest.importorskip("ray")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    videos = tmp_path / "videos"
    videos.mkdir()
    shutil.copy(media["videos"] / "c0.mp4", videos)
    (videos / "junk.mp4").write_bytes(b"\x00not a video" * 64)
    options = PipelineOptions(
        model=str(media["weights"]), device="cpu", detector="dlib", flow="dis", overlap="threads", crf=0,
        preset="ultrafast", engine="ray", ray_workers=1, ray_cpus=1,
    )  # fmt: skip
    collected = collect_inputs(videos)
    items, folder = collected.items, collected.folder
    result = restore_inputs(items, tmp_path / "out", options, folder=folder, threads=1, progress=False)
    assert not ray.is_initialized()
    assert [Path(s["output"]).stem for s in result.done] == ["c0"]
    assert [Path(source).name for source, _ in result.failed] == ["junk.mp4"]
    errors = capsys.readouterr().err
    assert errors.count("error:") == 1 and "junk.mp4" in errors
    records = {Path(r["input"]).stem: r for r in manifest(tmp_path / "out")}
    assert records["junk"]["status"] == "failed" and records["junk"]["attempts"] == 1 and records["junk"]["error"]
    assert records["c0"]["status"] == "done" and records["c0"]["attempts"] == 1
    assert_same_as_one_process(tmp_path / "out", media["reference"], ["c0"])


def test_ray_is_optional_and_imported_only_by_its_engine(tmp_path):
    """No module of the project imports Ray; without it, engine=ray is one `error:` line naming the install."""
    script = (
        "import importlib, pkgutil, sys, inference, train, keep\n"
        "for module in pkgutil.walk_packages(keep.__path__, 'keep.'):\n"
        "    importlib.import_module(module.name)\n"
        "assert 'ray' not in sys.modules, 'ray imported'\n"
        "sys.modules['ray'] = None  # as if not installed\n"
        f"sys.exit(inference.main(['-i', {str(SAMPLE)!r}, '-o', {str(tmp_path / 'out')!r}, '--set', 'engine=ray']))\n"
    )
    env = {**os.environ, "KEEP_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120, env=env
    )
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --set engine=ray needs Ray")
    assert "pip install -r requirements-ray.txt" in lines[0]


def test_engine_choices_and_torchrun(tmp_path, monkeypatch, capsys):
    assert main(["-i", str(SAMPLE), "-o", str(tmp_path / "out"), "--set", "engine=spark"]) == 2
    assert "unknown engine 'spark'; choose one of local, ray" in capsys.readouterr().err
    monkeypatch.setenv("WORLD_SIZE", "2")  # under torchrun: Ray places the workers itself
    assert main(["-i", str(SAMPLE), "-o", str(tmp_path / "out"), "--set", "engine=ray"]) == 2
    assert "engine=ray runs from one process" in capsys.readouterr().err


def node(cpus: float, gpus: float = 0, alive: bool = True) -> dict:
    return {"Alive": alive, "Resources": {"CPU": cpus, **({"GPU": gpus} if gpus else {})}}


def test_workers_per_cores_per_gpu_and_the_device():
    cpu = PipelineOptions(engine="ray", ray_cpus=4)
    assert workers_wanted([node(16), node(6), node(32, alive=False)], cpu, work=100) == 5  # 4 + 1; the dead one: 0
    assert workers_wanted([node(16)], cpu, work=3) == 3  # never more than the videos
    assert workers_wanted([node(16)], PipelineOptions(ray_workers=7, ray_cpus=4), work=100) == 7
    with pytest.raises(KeepError, match="no node of the Ray cluster has 4 CPU cores"):
        workers_wanted([node(2), node(3)], cpu, work=10)
    gpu = PipelineOptions(device="cuda", ray_gpus=0.5)
    assert workers_wanted([node(64, 8), node(8, 1)], gpu, work=100) == 18
    assert worker_device(PipelineOptions(device="auto"), [node(8, 2)]) == "cuda"
    assert worker_device(PipelineOptions(device="auto"), [node(8)]) == "cpu"
    assert worker_device(PipelineOptions(device="cuda:1"), [node(8, 2)]) == "cuda"  # Ray gives each worker its GPU
    with pytest.raises(KeepError, match="has no GPU"):
        worker_device(PipelineOptions(device="cuda"), [node(8)])


def test_a_cluster_that_does_not_answer_is_one_line_at_once(tmp_path, capsys):
    pytest.importorskip("ray")
    args = ["-i", str(SAMPLE), "-o", str(tmp_path / "out"), "--set", "engine=ray", "ray_address=127.0.0.1:1"]
    assert main(args) == 2  # Ray itself would retry for minutes
    assert "error: cannot start or reach Ray at 127.0.0.1:1" in capsys.readouterr().err
