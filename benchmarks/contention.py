"""Tiny-network streaming speed on a quiet machine and beside a competing busy process.

    python -m benchmarks contention                      # keep.threads' default, and what it avoids
    python -m benchmarks contention --compare 1 2 --spinning 2 --competitors 1 --seconds 8

Restores generated 64 px frames with `keep.load_model("preset:tiny", flow="dis")` and
`keep.streaming.StreamingRestorer`, each measurement in a fresh process that chooses its threads at
start-up as every entry point does (`keep.threads.set_threads`): once with the machine as it is
("quiet"), once while `--competitors` CPU-bound processes (Python busy loops, stopped at the end) run
on the same cores ("busy"). Prints frames/s for both and busy / quiet, for the default thread policy
(`keep.threads.default_threads`, with OpenMP's idle threads sleeping: `keep.threads.passive_openmp_waits`),
for each `--compare` thread count, and for each `--spinning` count with `OMP_WAIT_POLICY=ACTIVE`:
OpenMP threads that spin while they wait, as torch runs without this project (its 2 threads ran at 0.47
frames/s against 27.7 with one thread, docs/speed.md). Each measurement stops after `--seconds`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch

from keep.errors import KeepError
from keep.model import load_model
from keep.streaming import StreamingRestorer
from keep.threads import cpu_cores, set_threads

from .common import REPO, add_common_arguments, parser, write_json

BUSY_LOOP = "import sys, time\nend = time.time() + float(sys.argv[1])\nwhile time.time() < end:\n    pass\n"


def measure(threads: int | None, *, frames: int, size: int, window: int, seconds: float) -> dict:
    """In this process: set the threads as an entry point does, then restore frames for at most
    `seconds` (after one untimed warm-up window); returns frames/s and the thread count used."""
    used = set_threads(threads)
    torch.manual_seed(0)
    model = load_model("preset:tiny", flow="dis")
    g = torch.Generator().manual_seed(0)
    clip = torch.rand(1, frames, 3, size, size, generator=g) * 2 - 1
    StreamingRestorer(model, window=window).step({0: clip[0, :window]})  # warm-up: allocator, oneDNN
    restorer = StreamingRestorer(model, window=window)
    done, start = 0, time.perf_counter()
    for _ in restorer.restore(clip.unbind(dim=1)):
        done += 1
        if done % window == 0 and time.perf_counter() - start > seconds:
            break
    elapsed = time.perf_counter() - start
    return {"threads": used, "frames": done, "seconds": round(elapsed, 3), "fps": round(done / elapsed, 3)}


def run_worker(threads: int | None, args: argparse.Namespace, env: dict[str, str]) -> dict:
    """One measurement in a fresh interpreter (threads are chosen at start-up, as in real runs)."""
    command = [sys.executable, "-m", "benchmarks", "contention", "--worker", "--frames", str(args.frames)]
    command += ["--size", str(args.size)]
    command += ["--window", str(args.window), "--seconds", str(args.seconds)]
    if threads is not None:
        command += ["--threads", str(threads)]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=args.seconds * 10 + 120, env={**os.environ, **env}, cwd=REPO
    )
    if result.returncode != 0:
        raise KeepError(f"measurement failed: {result.stderr.strip().splitlines()[-1:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def busy(args: argparse.Namespace, threads: int | None, env: dict[str, str]) -> dict:
    """The measurement while `--competitors` busy loops run on our cores (started 1 s before)."""
    duration = args.seconds * 10 + 150  # outlives the measurement; stopped explicitly below
    competitors = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP, str(duration)]) for _ in range(args.competitors)]
    try:
        time.sleep(1.0)
        return run_worker(threads, args, env)
    finally:
        for process in competitors:
            process.terminate()
        for process in competitors:
            process.wait()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = parser("contention", __doc__)
    p.add_argument("--frames", type=int, default=200, help="frames generated (the run stops after --seconds)")
    p.add_argument("--size", type=int, default=64, help="frame size (the tiny network's 64)")
    p.add_argument("--window", type=int, default=5, help="streaming window")
    p.add_argument("--seconds", type=float, default=6.0, help="timed seconds per measurement (at most ~1 window more)")
    p.add_argument("--competitors", type=int, default=1, help="busy processes beside the busy measurement")
    p.add_argument("--compare", type=int, nargs="*", default=[], help="forced thread counts also measured")
    p.add_argument(
        "--spinning", type=int, nargs="*", default=[2], help="thread counts also measured with OMP_WAIT_POLICY=ACTIVE"
    )
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    add_common_arguments(p, device=False)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict | None:
    args = parse_args(argv)
    if min(args.frames, args.size, args.window) < 1 or args.seconds <= 0 or args.competitors < 0:
        raise KeepError("--frames, --size, --window must be >= 1, --seconds > 0, --competitors >= 0")
    if args.threads is not None and args.threads < 1:
        raise KeepError(f"--threads must be >= 1, got {args.threads}")
    if any(n < 1 for n in args.compare + args.spinning):
        raise KeepError("--compare and --spinning thread counts must be >= 1")
    if args.worker:
        figures = measure(args.threads, frames=args.frames, size=args.size, window=args.window, seconds=args.seconds)
        print(json.dumps(figures))
        return figures
    print(
        f"{cpu_cores()} cores, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
        f"{args.competitors} busy process(es) beside the busy runs; tiny network, {args.size} px, window {args.window}"
    )
    settings = [("default" if args.threads is None else f"--threads {args.threads}", args.threads, {})]
    settings += [(f"--threads {n}", n, {}) for n in args.compare]
    settings += [(f"--threads {n}, spinning", n, {"OMP_WAIT_POLICY": "ACTIVE"}) for n in args.spinning]
    rows = []
    for label, threads, env in settings:
        quiet = run_worker(threads, args, env)
        loaded = busy(args, threads, env)
        ratio = loaded["fps"] / quiet["fps"]
        rows.append({"setting": label, "quiet": quiet, "busy": loaded, "ratio": round(ratio, 3)})
        print(
            f"{label:22s} quiet {quiet['fps']:7.2f} frames/s ({quiet['threads']} threads)   "
            f"busy {loaded['fps']:7.2f} frames/s ({loaded['threads']} threads)   busy/quiet {ratio:.2f}",
            flush=True,
        )
    figures = {"loadavg": os.getloadavg(), "rows": rows}
    write_json(args.json, figures)
    return figures
