"""A skewed folder (one long clip, many short ones) on two workers: Ray's next-video-to-a-free-worker against
torchrun's fixed slices, in the same run, each against the ideal (its total work divided by the workers).

    python -m benchmarks ray                                    # 1 x 60 + 12 x 8 frames, 2 workers, tiny net
    python -m benchmarks ray --long 120 --short 10 --count 20 --workers 4 --out /tmp/skewed

Makes the folder from the shipped sample (176x144, looped), a tiny network with fixed weights, and starts one
local Ray (timed; on a cluster, $RAY_ADDRESS, it is already running and joined). Then restores the folder in
a real `inference.py` run per way, each into its own output folder (`--threads 1` per worker, `--detector dlib
--flow dis`):
- `ray`: `--set engine=ray ray_workers=N ray_cpus=1` joining that Ray (RAY_ADDRESS);
- `fixed slices`: `torchrun --nproc_per_node N`: rank r restores videos r, r+N, ... (keep/pipeline/batch.py);
- with `--one`, also one process alone (the work without any sharing).
Per run: the wall time of the command; the span from the first video's start to the last one's end (each
output's summary gives its seconds; its file's time, its end); the work (the sum of the videos' seconds) and
the ideal span, work / N; span / ideal is the figure of merit (1.0: no worker idles while another works).
Ray's per-worker lines (ready time, build, per-video overhead) are printed as inference.py prints them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import torch

import keep
from keep.errors import KeepError
from keep.pipeline import PipelineOptions
from keep.pipeline.ray_engine import connect, import_ray
from keep.video import VideoWriter

from .common import REPO, SAMPLE, at_least_one, parser

FLAGS = ["--device", "cpu", "--detector", "dlib", "--flow", "dis", "--threads", "1", "--set", "overlap=threads"]


def make_folder(folder: Path, long: int, short: int, count: int) -> None:
    """`long.mp4` of `long` frames and `count` clips of `short` frames, from the sample (looped)."""
    with av.open(str(SAMPLE)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    folder.mkdir(parents=True, exist_ok=True)
    clips = {"long": (long, 0)} | {f"short{i:02d}": (short, 7 * i) for i in range(count)}
    for name, (length, start) in clips.items():
        height, width = frames[0].shape[:2]
        writer = VideoWriter(folder / f"{name}.mp4", width=width, height=height, fps=Fraction(25), crf=12)
        for t in range(start, start + length):
            writer.write(frames[t % len(frames)])
        writer.close()


def timed(command: list[str], env: dict) -> tuple[float, str]:
    """Run `command`; its wall seconds and what it printed (KeepError if it failed)."""
    begun = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise KeepError(f"{' '.join(command[:4])} ... failed:\n{result.stderr[-3000:]}")
    return time.perf_counter() - begun, result.stdout


def span_and_work(out: Path) -> tuple[float, float]:
    """From the outputs' summaries: the span from the first video's start to the last one's end, and the work
    (the sum of the videos' seconds). A summary is written as its video ends: its file's time is that end."""
    starts, ends, work = [], [], 0.0
    for path in out.glob("*_summary.json"):
        seconds = json.loads(path.read_text())["seconds"]
        end = path.stat().st_mtime
        starts.append(end - seconds)
        ends.append(end)
        work += seconds
    return max(ends) - min(starts), work


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = parser("ray", __doc__)
    p.add_argument("--long", type=int, default=60, help="frames of the long clip")
    p.add_argument("--short", type=int, default=8, help="frames of each short clip")
    p.add_argument("--count", type=int, default=12, help="short clips")
    p.add_argument("--workers", type=int, default=2, help="Ray workers and torchrun processes")
    p.add_argument("--one", action="store_true", help="also restore the folder in one process")
    p.add_argument("--out", type=Path, help="folder for the clips and outputs (default: a temporary one)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    at_least_one(args, "long", "short", "count", "workers")
    ray = import_ray()
    root = args.out or Path(tempfile.mkdtemp(prefix="benchmark_ray_"))
    videos, weights = root / "videos", root / "tiny.pth"
    make_folder(videos, args.long, args.short, args.count)
    torch.manual_seed(0)
    keep.save_checkpoint(weights, keep.load_network("preset:tiny"))
    begun = time.perf_counter()
    where = connect(ray, PipelineOptions())  # a local Ray, or $RAY_ADDRESS's cluster
    started = time.perf_counter() - begun
    print(f"{args.count} x {args.short} + 1 x {args.long} frames (176x144), {args.workers} workers, {os.cpu_count()} "
          f"cores; {where} started or joined in {started:.1f} s", flush=True)  # fmt: skip
    inference = [str(REPO / "inference.py"), "-i", str(videos), "--model", str(weights), *FLAGS]
    env = {**os.environ, "KEEP_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    runs = {
        "ray": ([sys.executable, *inference, "--set", "engine=ray", f"ray_workers={args.workers}", "ray_cpus=1"],
                {**env, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}),
        "fixed slices": ([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          f"--nproc_per_node={args.workers}", *inference], env),
    }  # fmt: skip
    if args.one:
        runs["one process"] = ([sys.executable, *inference], env)
    figures = {}
    try:
        print(f"{'run':14s} {'wall s':>8s} {'span s':>8s} {'work s':>8s} {'ideal s':>8s} {'span/ideal':>10s}")
        for name, (command, run_env) in runs.items():
            out = root / name.replace(" ", "_")
            shutil.rmtree(out, ignore_errors=True)  # a folder of an earlier run: restore everything again
            wall, printed = timed([*command, "-o", str(out)], run_env)
            span, work = span_and_work(out)
            workers = 1 if name == "one process" else args.workers
            ideal = work / workers
            print(f"{name:14s} {wall:8.1f} {span:8.1f} {work:8.1f} {ideal:8.1f} {span / ideal:10.3f}", flush=True)
            figures[name] = {"wall_s": wall, "span_s": span, "work_s": work, "span_over_ideal": span / ideal}
            for line in printed.splitlines():
                if line.startswith("  w"):  # Ray's per-worker lines
                    print(f"{'':14s} {line.strip()}")
    finally:
        ray.shutdown()
    return figures
