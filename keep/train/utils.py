"""EMA, distributed helpers, stop signals, determinism switches, metrics logging: small pieces the trainer
composes."""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.distributed as dist
import torch.utils.deterministic as deterministic
from torch import nn

from ..errors import Interrupted, KeepError
from ..paths import write_atomically, write_error


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
def _collective_device() -> torch.device:
    """Where a tensor for a collective must live: NCCL reduces GPU tensors only, gloo CPU ones."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def agree_on_error(error: str | None) -> None:
    """Every rank raises rank 0's KeepError `error` (None: no error), so that no rank goes on alone to wait
    for the others in a collective; in a single process, raises `error` if there is one."""
    if dist.is_initialized():
        box = [error]
        dist.broadcast_object_list(box, src=0)
        error = box[0]
    if error is not None:
        raise KeepError(error)


def any_rank(flag: bool) -> bool:
    """Whether `flag` is true on any rank (every rank calls it at the same point); `flag` in one process."""
    if not dist.is_initialized():
        return flag
    value = torch.tensor([int(flag)], device=_collective_device())
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def wrap_ddp(module: nn.Module, device: torch.device) -> nn.Module:
    """DistributedDataParallel around `module` when a process group runs, else `module` itself.

    DDP broadcasts rank 0's weights at construction, buckets the gradients of the parameters that
    require them (frozen ones are left out) and all-reduces each bucket as soon as backward has filled
    it. (KEEP and the discriminators have no buffers, so there is nothing to re-broadcast per forward.)"""
    if not dist.is_initialized():
        return module
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=device_ids)


def mean_across_ranks(value: torch.Tensor | float) -> torch.Tensor | float:
    """Average a tensor (or a float) over all ranks; the identity in a single process."""
    if not dist.is_initialized():
        return value
    if isinstance(value, torch.Tensor):
        t = value.detach().clone()
    else:
        t = torch.tensor([value], dtype=torch.float64, device=_collective_device())
    dist.all_reduce(t)
    t /= dist.get_world_size()
    return t if isinstance(value, torch.Tensor) else float(t.item())


# ------------------------------------------------------------------------------------------ stop signals
class StopSignals:
    """Ctrl-C (SIGINT) and SIGTERM (docker, systemd, Slurm, Kubernetes) during training ask for a stop at the
    end of the step, once the training state is saved (`Trainer.fit`), instead of ending the process where it
    is. All ranks of a torchrun job agree on the step (`requested`: any rank that got the signal stops all).

    A second signal more than `REPEAT_S` seconds after the first stops at once, without saving (the last
    saved state is kept); sooner, it is the same request (torchrun and Slurm pass a signal on to processes that
    got it already). Installed in the main thread only (elsewhere signals cannot be handled)."""

    REPEAT_S = 5.0

    def __init__(self):
        self.received: str | None = None  # the first signal's name
        self.at = 0.0
        self.previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous.clear()

    def _handle(self, signum: int, frame) -> None:
        name = signal.Signals(signum).name
        if self.received is None:
            self.received, self.at = name, time.monotonic()
        elif time.monotonic() - self.at > self.REPEAT_S:
            raise Interrupted(f"by a second {name}: stopped at once, without saving (the last saved state is kept)")

    def requested(self) -> bool:
        """Whether a stop signal reached this process or any other rank (a collective: every rank calls it)."""
        return any_rank(self.received is not None)


def ignore_stop_signals(worker_id: int) -> None:
    """A DataLoader worker's start: it leaves Ctrl-C and SIGTERM to the trainer, which still needs a batch or
    two to end its step and stops the workers itself (a worker killed by the signal would end the run with
    an internal failure instead of a save)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


# ------------------------------------------------------------------------------------------ determinism
@contextlib.contextmanager
def deterministic_algorithms(enabled: bool) -> Iterator[None]:
    """Within the block, torch picks deterministic kernels where it has them (warn where it has none, as
    some CUDA backward kernels) and cuDNN neither benchmarks nor picks non-deterministic algorithms;
    the previous settings come back afterwards. The thread count is the caller's (see train.py)."""
    if not enabled:
        yield
        return

    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        deterministic.fill_uninitialized_memory,
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS reproducibility (read at handle init)
    torch.use_deterministic_algorithms(True, warn_only=True)
    deterministic.fill_uninitialized_memory = False  # a debugging aid that costs a memory pass per tensor
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        deterministic.fill_uninitialized_memory = saved[2]
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[3], saved[4]


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
        try:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as exc:
            raise write_error(self.path, exc) from None
        print(" ".join([f"step {step:6d}"] + [f"{k} {v:.4g}" for k, v in values.items()]), flush=True)
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(k, v, step)
            self.writer.flush()

    def truncate_after(self, step: int) -> None:
        """On resume: drop records of steps after the resumed one (they will be logged again)."""
        if not self.enabled or not self.path.is_file():
            return
        lines = []
        for line in self.path.read_text().splitlines():
            try:
                if json.loads(line)["step"] <= step and step > 0:  # a fresh start keeps nothing
                    lines.append(line)
            except (ValueError, KeyError, TypeError):
                pass  # a line cut short when the run was killed
        write_atomically(self.path, "".join(ln + "\n" for ln in lines))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
