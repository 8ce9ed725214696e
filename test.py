"""Benchmark a KEEP model on aligned face clips (VFHQ test protocol, KEEP_SPEC section 11).

    python test.py -opt configs/test_vfhq.yml
    python test.py -opt configs/test_vfhq.yml --model preset:tiny --set data.root=/data/tiny --set methods=[bicubic]

Writes restored frames (optional), per-frame / per-clip metrics (CSV, JSON), a markdown table with
the paper's columns and per-clip plots into results/<name>/. See docs/benchmark.md.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from keep.config import load_config
from keep.errors import KeepError

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "test_vfhq.yml"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=(
            "Test set layout: <data.root>/GT/<clip>/*.png (aligned faces at the network's size, 512) and "
            "<data.root>/LQ/<clip>/*.png (x4 smaller, same file names); make LQ once with "
            "scripts/make_test_set.py. Methods: bicubic, keep_per_frame (no temporal propagation: gain 0, "
            "no CFA), keep (streamed over the whole clip). Outputs: <results_dir>/<name>/table.md, "
            "per_frame.csv, per_clip.csv, results.json, plots/, images/ (with --save-images)."
        ),
    )
    parser.add_argument("-opt", "--opt", default=str(DEFAULT_CONFIG), help="YAML config (default: %(default)s)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config key, e.g. --set data.root=datasets/vfhq_test --set methods=[bicubic,keep] (repeatable)",
    )  # fmt: skip
    parser.add_argument("--model", help="checkpoint path, registry name (keep) or preset:<name> (model.source)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (device)")
    parser.add_argument("--name", help="results folder name (name)")
    parser.add_argument("--save-images", action="store_true", help="write the restored frames (save_images)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        from keep.evaluation import BenchmarkConfig, run_benchmark

        overrides = list(args.overrides)
        for key, value in (("model.source", args.model), ("device", args.device), ("name", args.name)):
            if value is not None:
                overrides.append(f"{key}={value}")
        if args.save_images:
            overrides.append("save_images=true")
        if args.no_progress:
            overrides.append("progress=false")
        cfg = load_config(BenchmarkConfig, args.opt, overrides)
        result = run_benchmark(cfg)
    except KeepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(result["table"])
    print(f"results in {result['dir']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
