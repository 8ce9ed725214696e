"""`python -m benchmarks COMMAND [options]`: one entry point for every measurement of the lab."""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: idle OpenMP threads sleep (keep/threads.py)

import importlib
import sys

from keep.cli import run_main

COMMANDS = {  # command -> (module, what it measures)
    "speed": ("speed", "the network: frames/s, memory, code agreement per precision"),
    "profile": ("profiling", "the network: torch.profiler over one window, by part and by operator"),
    "pipeline": ("pipeline", "inference.py's stages alone and overlapped on a generated two-person clip"),
    "soak": ("soak", "peak memory of every pipeline process over a long video"),
    "compose": ("compose", "background, paste and encode alone, ms/frame"),
    "detect": ("detect", "retinaface_mobilenet's detect_batch on large frames, per detect size"),
    "detectors": ("detectors", "every detector on the project's clips: coverage, speed, landmarks"),
    "contention": ("contention", "the tiny network beside a busy process, per thread policy"),
    "ddp": ("ddp", "gradient collectives of multi-process training, per tiny stage"),
    "ray": ("ray_folder", "a skewed folder on Ray's workers against torchrun's fixed slices"),
}


def usage() -> str:
    lines = ["usage: python -m benchmarks COMMAND [options]   (COMMAND --help: its options)", "", "commands:"]
    lines += [f"  {name:<11} {what}" for name, (_, what) in COMMANDS.items()]
    lines += ["", "benchmarks/gpu_session.sh runs every GPU measurement in one budgeted command (docs/speed.md)."]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if argv[0] not in COMMANDS:
        print(usage(), file=sys.stderr)
        print(f"error: unknown command '{argv[0]}'; choose one of {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"benchmarks.{COMMANDS[argv[0]][0]}")
    return run_main(lambda: module.main(argv[1:]) and None)  # exit 2 and one line for bad input (keep/cli.py)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
