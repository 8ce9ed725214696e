"""keep/distributed.py: the one reader of torchrun's environment, for inference and training (their runs under
torchrun: tests/test_inference.py, tests/test_train.py)."""

from __future__ import annotations

import torch

from keep.distributed import Torchrun, start_process_group, torchrun_place


def test_the_place_comes_from_torchruns_environment(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert torchrun_place() == Torchrun(rank=0, world=1, local_rank=0, local_world=1)
    assert not start_process_group("cpu").active and not torch.distributed.is_initialized()  # alone: no group
    monkeypatch.setenv("RANK", "5")
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    place = torchrun_place()
    assert (place.rank, place.world, place.local_rank, place.local_world, place.active) == (5, 8, 1, 4, True)
    assert place.device_of("cuda") == torch.device("cuda", 1) == place.device_of("cuda:3")  # GPU LOCAL_RANK
    assert place.device_of("cpu") == torch.device("cpu")
    assert Torchrun().device_of("cuda:2") == torch.device("cuda", 2)  # outside torchrun: as asked
