"""This process's place among `torchrun`'s processes, for inference and training alike: the one reader of
torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE) and the one place a process group
is started (env://; NCCL on GPUs, gloo on the CPU).

    place = start_process_group(device)      # Torchrun(rank=0, world=1, ...) outside torchrun: nothing started
    device = place.device_of(device)         # cuda -> cuda:LOCAL_RANK
    ...
    stop_process_group()

`keep/pipeline/batch.py` shares a folder of inputs over the processes; `keep/train/` runs DDP over them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Torchrun:
    """Where this process stands: its rank among `world` processes, and on its node (`local_rank` of
    `local_world`). Outside torchrun: rank 0 of 1."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1

    @property
    def active(self) -> bool:
        """Whether several processes share the work (a process group is needed)."""
        return self.world > 1

    def device_of(self, device: str | torch.device) -> torch.device:
        """The device this process uses for `device`: a CUDA device becomes GPU LOCAL_RANK under torchrun."""
        device = torch.device(device)
        if device.type == "cuda" and self.active:
            return torch.device("cuda", self.local_rank)
        return device


def torchrun_place() -> Torchrun:
    """This process's place, read from torchrun's environment (rank 0 of 1 without it)."""
    env = os.environ
    return Torchrun(
        rank=int(env.get("RANK", "0")),
        world=int(env.get("WORLD_SIZE", "1")),
        local_rank=int(env.get("LOCAL_RANK", "0")),
        local_world=int(env.get("LOCAL_WORLD_SIZE", "1")),
    )


def start_process_group(device: str | torch.device) -> Torchrun:
    """Start torch.distributed's default group when torchrun started several processes (once per process);
    returns this process's place."""
    place = torchrun_place()
    if place.active:
        if not dist.is_initialized():
            device = torch.device(device)
            if device.type == "cuda":  # NCCL's collectives of plain values and its barrier run on this GPU
                torch.cuda.set_device(device)
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method="env://")
    return place


def stop_process_group() -> None:
    """Tear down the default group if one was started (a no-op otherwise)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
