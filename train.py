"""Train a KEEP stage: `python train.py -opt configs/released/<stage>.yml [--set k=v ...] [--auto_resume]`.

Multi-GPU / multi-node: `torchrun --nproc_per_node N train.py -opt ...` (DistributedDataParallel, env://).
Exit codes (keep.cli): 0 done, 2 bad input (config, data, device, weights, a run folder another training
holds, a full disk), 130 interrupted (Ctrl-C or SIGTERM: the step's state is saved first), 1 a bug.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: idle OpenMP threads sleep (keep/threads.py)

import argparse
import sys

from keep.cli import add_device_argument, add_set_argument, add_threads_argument, run_main
from keep.config import load_config
from keep.distributed import torchrun_place
from keep.threads import cpu_cores, set_threads
from keep.train import TrainConfig, Trainer


def _main(args: argparse.Namespace) -> None:
    cfg = load_config(TrainConfig, args.opt, args.overrides, flags={"train.device": args.device})
    # train.deterministic: a fixed thread count (the cores this process may use), never the load-dependent
    # default, because the CPU kernels' sums depend on the number of threads (a resume reuses the run's).
    fixed = max(1, cpu_cores() // torchrun_place().local_world)  # torchrun: the node's cores shared
    set_threads(args.threads if args.threads is not None else (fixed if cfg.train.deterministic else None))
    Trainer(cfg, auto_resume=args.auto_resume).fit()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-opt", "--opt", required=True, help="YAML configuration (configs/released/*.yml)")
    add_set_argument(parser)
    parser.add_argument(
        "--auto_resume",
        action="store_true",
        help="continue from training_states/latest.state, or from step 0 if none (the first line says which)",
    )
    add_device_argument(parser, default=None)  # train.device
    add_threads_argument(parser)
    args = parser.parse_args(argv)
    return run_main(lambda: _main(args))


if __name__ == "__main__":
    sys.exit(main())
