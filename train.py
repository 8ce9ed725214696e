"""Train a KEEP stage: `python train.py -opt configs/<stage>.yml [--set k=v ...] [--auto_resume]`.

Multi-GPU / multi-node: `torchrun --nproc_per_node N train.py -opt ...` (DDP, env:// init).
"""

from __future__ import annotations

import argparse
import sys

from keep.config import load_config
from keep.errors import KeepError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-opt", "--opt", required=True, help="YAML configuration (configs/*.yml)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override config keys")
    parser.add_argument("--auto_resume", action="store_true", help="continue from training_states/latest.state")
    args = parser.parse_args(argv)
    try:
        from keep.train import TrainConfig, Trainer

        cfg = load_config(TrainConfig, args.opt, args.set)
        Trainer(cfg, auto_resume=args.auto_resume).fit()
    except KeepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
