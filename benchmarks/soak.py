"""Memory over a long video: peak RSS after N restored frames stays flat.

    python -m benchmarks soak                                   # 3000 frames, 1920x1080, tiny preset
    python -m benchmarks soak --frames 600 --size 960x540 --checkpoints 60 600

Generates the two-person clip of `benchmarks pipeline` at the given size and length, restores it
with the tiny preset (random weights: memory, not quality) and records, when each checkpoint's frame
is restored, the peak resident memory (VmHWM) of the main process and of each stage worker process,
and their sum. Pages of the shared frame pool count in every process that touched them, the same at
every checkpoint. Linux only (/proc). Prints a table; `--json` writes it.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from keep.pipeline import Pipeline, PipelineOptions
from keep.threads import set_threads

from .common import add_common_arguments, frame_size, parser, peak_rss_mib, write_json, write_two_person_clip


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    set_threads(args.threads)
    width, height = frame_size(args.size)
    checkpoints = sorted(set(args.checkpoints))
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        clip = write_two_person_clip(Path(tmp) / "soak.mp4", args.frames, width, height, crf=28)
        print(f"generated {args.frames} frames {width}x{height} in {time.perf_counter() - start:.0f} s", flush=True)
        options = PipelineOptions(
            model=args.model, detector="dlib", flow="dis", mask="feather", overlap=args.overlap, crf=28,
            window=args.window,
        )  # fmt: skip
        rows = []
        with Pipeline(options) as pipeline:
            pipeline.build()  # the worker processes, to watch from the start
            workers = {role: w.pid for role, w in getattr(pipeline.runner, "workers", {}).items() if hasattr(w, "pid")}
            pids = {"main": os.getpid(), **workers}

            def sample(restored: int) -> None:
                if checkpoints and restored >= checkpoints[0]:
                    checkpoints.pop(0)
                    peaks = {name: round(peak_rss_mib(pid), 1) for name, pid in pids.items()}
                    rows.append({"frames": restored, **peaks, "sum": round(sum(peaks.values()), 1)})
                    print(f"{restored:6d} frames: peak RSS {rows[-1]}", flush=True)

            summary = pipeline.run(clip, Path(tmp) / "out", options, progress=False, on_restored=sample)
    first, last = rows[0], rows[-1]
    growth = last["sum"] / first["sum"] - 1
    print(f"\n{summary['frames']} frames in {summary['seconds']:.0f} s ({summary['frames_per_second']:.1f} frames/s)")
    print(f"{'frames':>7} " + " ".join(f"{name:>9}" for name in pids) + f" {'sum MiB':>9}")
    for row in rows:
        print(f"{row['frames']:7d} " + " ".join(f"{row[name]:9.0f}" for name in pids) + f" {row['sum']:9.0f}")
    print(f"peak RSS after {last['frames']} frames vs after {first['frames']}: {growth:+.1%}")
    figures = {"rows": rows, "growth": growth, "summary": summary}
    write_json(args.json, figures)
    return figures


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = parser("soak", __doc__)
    p.add_argument("--frames", type=int, default=3000)
    p.add_argument("--size", default="1920x1080", help="WxH of the generated clip")
    p.add_argument("--checkpoints", type=int, nargs="+", default=[300, 1000, 2000, 3000])
    p.add_argument("--model", default="preset:tiny")
    p.add_argument("--window", type=int, default=20)
    p.add_argument("--overlap", default="processes", choices=("processes", "threads", "off"))
    add_common_arguments(p, device=False)
    return p.parse_args(argv)
