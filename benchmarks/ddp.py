"""Gradient synchronisation in multi-process training, before and after DistributedDataParallel.

    python -m benchmarks ddp [--stages vqgan kalman cft_cfa] [--steps 3] [--processes 2] [--batch_size 1]
                             [--out DIR] [--dtype float32]

Trains each tiny released-recipe stage (configs/tiny/released/, from random weights, GAN on from the first
step) in `--processes` CPU processes (gloo) and prints, per stage, the collectives one training step
issues: before, the trainer all-reduced every trainable parameter tensor one by one after backward (the
count is that number of tensors, generator and discriminator); after, DDP's gradient buckets (counted by
a communication hook), each all-reduced while backward still runs, plus any other all-reduce of the step
(the adaptive GAN weight's). With `--out`, each rank's final weights are written there
(`<stage>_rank<r>.pt`: {"network", "disc"}), which tests/test_train.py compares with `--processes 1
--batch_size 2` (the same clips in one process, run the same way: spawned, one thread); `--dtype float64` trains
in double precision there, so that rounding noise stays far below Adam's epsilon (in float32, gradients
that are zero in exact arithmetic, such as a conv bias before GroupNorm, are rounding noise of either
sign, which Adam's first steps turn into +-lr updates, and code choices then differ).
"""

from __future__ import annotations

import argparse
import os
import socket
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from keep.config import load_config
from keep.train import TrainConfig, Trainer

from .common import REPO, parser

CONFIGS = {
    "vqgan": REPO / "configs/tiny/released/stage1_vqgan.yml",
    "kalman": REPO / "configs/tiny/released/stage2_kalman.yml",
    "cft_cfa": REPO / "configs/tiny/released/stage3_cft_cfa.yml",
}


def stage_overrides(root: Path, steps: int, batch_size: int) -> list[str]:
    """What the benchmark (and the DDP test's single-process reference) changes in a tiny stage config."""
    return [
        f"root={root}",
        "model.pretrained=null",
        f"train.total_steps={steps}",
        f"data.batch_size={batch_size}",
        "train.disc_start=0",
        "train.ema_decay=0.0",
        "val=null",
        "log.tensorboard=false",
        f"log.every={steps}",
    ]


def as_default_dtype(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The data pipeline yields float32; cast it to the default dtype (float64 for exact comparisons)."""
    return {k: v.to(torch.get_default_dtype()) if v.is_floating_point() else v for k, v in batch.items()}


class CommCounter:
    """Per training step: the calls of DDP's communication hook (one per gradient bucket) and the all_reduce
    calls made from Python while the step runs."""

    def __init__(self):
        self.buckets = self.python_calls = 0
        self.inside = False
        self.all_reduce = dist.all_reduce
        dist.all_reduce = self._counting_all_reduce

    def hook(self, state, bucket):  # DDP communication hook: one call per bucket per step
        self.buckets += 1
        tensor = bucket.buffer().div_(dist.get_world_size())
        return self.all_reduce(tensor, async_op=True).get_future().then(lambda fut: fut.value()[0])

    def _counting_all_reduce(self, *a, **kw):
        self.python_calls += self.inside
        return self.all_reduce(*a, **kw)

    def counted(self, step_fn, counts: list):
        """`step_fn` that appends (buckets, Python all_reduce calls) to `counts` after each step."""

        def step(batch):
            batch = as_default_dtype(batch)
            self.buckets = self.python_calls = 0
            self.inside = True
            try:
                return step_fn(batch)
            finally:
                self.inside = False
                counts.append((self.buckets, self.python_calls))

        return step


def _train(stage: str, rank: int, world: int, args: argparse.Namespace, counter: CommCounter) -> tuple:
    """Train one stage in this rank; returns (parameter tensors, per-step counts, seconds per step)."""
    overrides = stage_overrides(Path(args.root) / f"rank{rank}", args.steps, args.batch_size) + [f"name={stage}"]
    trainer = Trainer(load_config(TrainConfig, CONFIGS[stage], overrides))
    if world > 1:  # one process trains without DDP: nothing to count
        trainer.forward.register_comm_hook(None, counter.hook)
        if trainer.disc is not None:
            trainer.disc_forward.register_comm_hook(None, counter.hook)
    counts: list = []
    trainer.train_step = counter.counted(trainer.train_step, counts)
    start = time.perf_counter()
    trainer.fit()
    seconds = (time.perf_counter() - start) / args.steps
    tensors = len(trainer.params) + (len(list(trainer.disc.parameters())) if trainer.disc is not None else 0)
    if args.out:
        weights = {"network": trainer.network.state_dict(), "disc": None}
        if trainer.disc is not None:
            weights["disc"] = trainer.disc.state_dict()
        torch.save(weights, Path(args.out) / f"{stage}_rank{rank}.pt")
    return tensors, counts, seconds


def _worker(rank: int, world: int, port: int, args: argparse.Namespace, results) -> None:
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    torch.set_default_dtype(getattr(torch, args.dtype))
    counter = CommCounter()
    for stage in args.stages:
        tensors, counts, seconds = _train(stage, rank, world, args, counter)
        if rank == 0:
            results.put((stage, tensors, counts, seconds))
    if dist.is_initialized():
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as root:
        args.root = root
        context = mp.get_context("spawn")
        results = context.SimpleQueue()
        mp.spawn(_worker, args=(args.processes, _free_port(), args, results), nprocs=args.processes, join=True)
        while not results.empty():
            stage, tensors, counts, seconds = results.get()
            if args.processes == 1:
                clips = f"{args.batch_size} clip{'s' if args.batch_size > 1 else ''}"
                print(f"{stage}: 1 process, {clips} per step, no DDP; {seconds:.2f} s/step", flush=True)
                continue
            (first, _), (buckets, others) = counts[0], counts[-1]
            print(
                f"{stage}: {args.processes} processes (gloo), collectives per step: hand-written all-reduce "
                f"{tensors} (one per trainable tensor, after backward) -> DDP {buckets + others} ({buckets} "
                f"gradient buckets overlapped with backward + {others} other; first step {first}, before DDP "
                f"regroups its buckets in backward order); {seconds:.2f} s/step",
                flush=True,
            )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = parser("ddp", __doc__)
    p.add_argument("--stages", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--batch_size", type=int, default=1, help="clips per process and step")
    p.add_argument("--out", help="folder for each rank's final weights")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"], help="training precision")
    return p.parse_args(argv)
