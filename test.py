"""Benchmark a KEEP model on aligned face clips (the VFHQ test protocol, docs/benchmark.md).

    python test.py -opt configs/test_vfhq_easy.yml --device cuda      # KEEP's published protocol
    python test.py -opt configs/test_vfhq.yml
    python test.py -opt configs/test_vfhq.yml --model preset:tiny --set data.root=/data/tiny methods=[bicubic]

Writes restored frames (optional), per-frame / per-clip metrics (CSV, JSON), a markdown table with
the paper's columns and per-clip plots into results/<name>/. See docs/benchmark.md.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: idle OpenMP threads sleep (keep/threads.py)

import argparse
import logging
import sys
from pathlib import Path

from keep.cli import add_device_argument, add_set_argument, add_threads_argument, run_main
from keep.config import load_config
from keep.evaluation import BenchmarkConfig, run_benchmark
from keep.threads import set_threads

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "test_vfhq.yml"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=(
            "Test set layout: <data.root>/GT/<clip>/*.png (aligned faces at the network's size, 512) and "
            "<data.root>/LQ/<clip>/*.png (x4 smaller, same file names); make LQ once with "
            "scripts/make_test_set.py (--protocol vfhq_easy: KEEP's published test set). Methods: bicubic, "
            "keep_per_frame (no temporal propagation: gain 0, no CFA), keep (streamed over the whole clip; "
            "model.stream_mode carry | reset | released). Outputs: <results_dir>/<name>/table.md, "
            "per_frame.csv, per_clip.csv, results.json, plots/, images/ (with --save_images). A name that "
            "already holds a run is refused unless --overwrite. Bad input: one 'error:' line, exit status 2."
        ),
    )
    parser.add_argument("-opt", "--opt", default=str(DEFAULT_CONFIG), help="YAML config (default: %(default)s)")
    add_set_argument(parser)
    parser.add_argument("--model", help="checkpoint path, registry name (keep) or preset:<name> (model.source)")
    add_device_argument(parser, default=None)  # device
    parser.add_argument("--name", help="results folder name (name)")
    parser.add_argument("--save_images", action="store_true", help="write the restored frames (save_images)")
    parser.add_argument("--overwrite", action="store_true", help="replace a previous run under --name (overwrite)")
    parser.add_argument("--no_progress", action="store_true", help="no progress bars (progress=false)")
    add_threads_argument(parser)
    for old, new in (("--save-images", "save_images"), ("--no-progress", "no_progress")):  # earlier spellings
        parser.add_argument(old, dest=new, action="store_true", help=argparse.SUPPRESS)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return run_main(lambda: _main(args))


def _main(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    flags = {"model.source": args.model, "device": args.device, "name": args.name}
    flags |= {"save_images": args.save_images or None, "overwrite": args.overwrite or None}  # None: not given
    flags |= {"progress": False if args.no_progress else None}
    cfg = load_config(BenchmarkConfig, args.opt, args.overrides, flags=flags)
    result = run_benchmark(cfg)
    print(result["table"])
    print(f"results in {result['dir']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
