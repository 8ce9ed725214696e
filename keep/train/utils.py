"""EMA, distributed helpers, metrics logging: small pieces the trainer composes."""

from __future__ import annotations

import copy
import json
import math
import os
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn


class EMA:
    """Exponential moving average of a network's parameters (buffers copied)."""

    def __init__(self, model: nn.Module, *, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for ema_p, p in zip(self.model.parameters(), model.parameters(), strict=True):
            ema_p.lerp_(p.detach(), 1 - self.decay)
        for ema_b, b in zip(self.model.buffers(), model.buffers(), strict=True):
            ema_b.copy_(b)


# ------------------------------------------------------------------------------------------ DDP
def init_distributed(device: str) -> tuple[int, int]:
    """torchrun-compatible: env:// when WORLD_SIZE > 1 (nccl on GPU, gloo on CPU). -> (rank, world)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo", init_method="env://")
    return dist.get_rank(), dist.get_world_size()


def broadcast_module(module: nn.Module) -> None:
    """Make every rank start from rank 0's weights."""
    if dist.is_initialized():
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=0)


def average_gradients(params: list[nn.Parameter]) -> None:
    """All-reduce-average gradients across ranks: what DistributedDataParallel does after backward.
    Done explicitly because the stages call submodules (encoder, quantizer, ...) directly."""
    if not dist.is_initialized():
        return
    world = dist.get_world_size()
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad)
        p.grad /= world


def mean_across_ranks(value: float) -> float:
    if not dist.is_initialized():
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item()) / dist.get_world_size()


# ------------------------------------------------------------------------------------------ logging
class MetricsLogger:
    """One flat dict per logged step -> console, `metrics.jsonl` and tensorboard (rank 0 only)."""

    def __init__(self, run_dir: Path, *, enabled: bool, tensorboard: bool):
        self.enabled = enabled
        self.path = run_dir / "metrics.jsonl"
        self.writer = None
        if enabled and tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "tb_logger"))

    def log(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        record = {"step": step, **{k: (v if math.isfinite(v) else str(v)) for k, v in values.items()}}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        print(" ".join([f"step {step:6d}"] + [f"{k} {v:.4g}" for k, v in values.items()]), flush=True)
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(k, v, step)
            self.writer.flush()

    def truncate_after(self, step: int) -> None:
        """On resume: drop records of steps after the resumed one (they will be logged again)."""
        if not self.enabled or not self.path.is_file():
            return
        keep = (lambda s: s <= step) if step > 0 else (lambda s: False)  # a fresh start keeps nothing
        lines = [ln for ln in self.path.read_text().splitlines() if ln and keep(json.loads(ln)["step"])]
        self.path.write_text("".join(ln + "\n" for ln in lines))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
