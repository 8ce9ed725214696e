"""Benchmark a KEEP model on aligned face clips (VFHQ test protocol, KEEP_SPEC section 11).

    python test.py -opt configs/test_vfhq_easy.yml --device cuda      # KEEP's published protocol
    python test.py -opt configs/test_vfhq.yml
    python test.py -opt configs/test_vfhq.yml --model preset:tiny --set data.root=/data/tiny methods=[bicubic]

Writes restored frames (optional), per-frame / per-clip metrics (CSV, JSON), a markdown table with
the paper's columns and per-clip plots into results/<name>/. See docs/benchmark.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from keep.cli import add_set_argument, add_threads_argument, run_main, set_threads
from keep.config import load_config

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
            "per_frame.csv, per_clip.csv, results.json, plots/, images/ (with --save-images). A name that "
            "already holds a run is refused unless --overwrite. Bad input: one 'error:' line, exit status 2."
        ),
    )
    parser.add_argument("-opt", "--opt", default=str(DEFAULT_CONFIG), help="YAML config (default: %(default)s)")
    add_set_argument(parser)
    parser.add_argument("--model", help="checkpoint path, registry name (keep) or preset:<name> (model.source)")
    parser.add_argument("--device", help="cpu | cuda | cuda:N | auto (device; default: the config's)")
    parser.add_argument("--name", help="results folder name (name)")
    parser.add_argument("--save-images", action="store_true", help="write the restored frames (save_images)")
    parser.add_argument("--overwrite", action="store_true", help="replace a previous run under --name (overwrite)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_threads_argument(parser)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return run_main(lambda: _main(args))


def _main(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    from keep.evaluation import BenchmarkConfig, run_benchmark

    overrides = list(args.overrides)
    for key, value in (("model.source", args.model), ("device", args.device), ("name", args.name)):
        if value is not None:
            overrides.append(f"{key}={json.dumps(value)}")  # a quoted YAML string, whatever the text
    for key, flag in (("save_images", args.save_images), ("overwrite", args.overwrite)):
        if flag:
            overrides.append(f"{key}=true")
    if args.no_progress:
        overrides.append("progress=false")
    cfg = load_config(BenchmarkConfig, args.opt, overrides)
    result = run_benchmark(cfg)
    print(result["table"])
    print(f"results in {result['dir']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
