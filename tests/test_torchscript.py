"""TorchScript archives read as state dicts without running their code (keep/torchscript.py)."""

from __future__ import annotations

import os
import pickle
import zipfile

import pytest
import torch
from torch import nn

from keep.errors import KeepError
from keep.torchscript import is_torchscript_archive, read_torchscript_state
from keep.weights import read_tensors

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")


class Small(nn.Module):
    """Parameters, buffers (float and integer), nested and listed sub-modules, one fp16 layer."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.blocks = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2).half())
        self.scale = nn.Parameter(torch.randn(3))
        self.register_buffer("mask", torch.triu(torch.ones(5, 5)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.bn(self.conv(x)).mean((2, 3))
        return self.blocks[2](self.blocks[1](self.blocks[0](h)).half()).float() + self.scale.sum() + self.mask.sum()


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    torch.manual_seed(0)
    module = Small()
    module.bn.running_mean.normal_()  # buffers that differ from their initial values
    module.bn.num_batches_tracked += 7
    path = tmp_path_factory.mktemp("ts") / "small.pt"
    torch.jit.script(module).save(str(path))
    return path, module.state_dict()


def test_archive_reads_as_the_module_state_dict(archive):
    path, expected = archive
    got = read_torchscript_state(path)
    assert is_torchscript_archive(path) and sorted(got) == sorted(expected)
    for key, value in expected.items():
        assert got[key].dtype == value.dtype and torch.equal(got[key], value), key
    assert sorted(read_tensors(path)) == sorted(expected)  # the project's one reader dispatches to it


def test_code_folder_is_never_opened(archive, tmp_path):
    """An archive whose code/ files are garbage reads the same: nothing in code/ is compiled or run."""
    path, expected = archive
    broken = tmp_path / "broken.pt"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(broken, "w") as target:
        for item in source.infolist():
            target.writestr(item, b"raise SystemExit('ran')" if "/code/" in item.filename else source.read(item))
    assert sorted(read_torchscript_state(broken)) == sorted(expected)


class RunsCommand:
    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def planted(path, tmp_path, payload: bytes):
    """A copy of the archive whose data.pkl is `payload`."""
    out = tmp_path / "planted.pt"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(out, "w") as target:
        for item in source.infolist():
            target.writestr(item, payload if item.filename.endswith("/data.pkl") else source.read(item))
    return out


@pytest.mark.parametrize("kind", ["os.system", "builtins.eval"])
def test_code_running_pickle_is_refused_before_anything_runs(archive, tmp_path, kind):
    marker = tmp_path / "ran"
    if kind == "os.system":
        payload = pickle.dumps(RunsCommand(f"touch {marker}"), protocol=2)
    else:
        payload = b"cbuiltins\neval\n(V__import__('pathlib').Path(" + repr(str(marker)).encode() + b").touch()\ntR."
    bad = planted(archive[0], tmp_path, payload)
    with pytest.raises(KeepError, match=r"asks for (posix|os|nt)\.system|asks for builtins\.eval") as info:
        read_tensors(bad, "CLIP weights")
    assert "\n" not in str(info.value) and str(bad) in str(info.value)
    assert not marker.exists()


def test_damaged_archive_is_one_line(archive, tmp_path):
    path, _ = archive
    cut = tmp_path / "cut.pt"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(cut, "w") as target:
        for item in source.infolist():
            if "/data/" not in item.filename:  # every storage missing
                target.writestr(item, source.read(item))
    with pytest.raises(KeepError, match="cannot read weights .*cut.pt: KeyError") as info:
        read_torchscript_state(cut)
    assert "\n" not in str(info.value)
    assert not is_torchscript_archive(tmp_path / "nothing.pt")


def test_build_aimed_at_an_allowed_function_changes_nothing_outside(archive, tmp_path):
    """BUILD with a slot state sets attributes: aimed at an allowed rebuild function, it reaches a wrapper."""
    before = torch._utils._rebuild_tensor_v2.__defaults__
    name = b"__defaults__"
    payload = b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\nN}X" + len(name).to_bytes(4, "little") + name
    payload += b"K\x01\x85s\x86b."  # (None, {"__defaults__": (1,)}), BUILD
    with pytest.raises(KeepError, match="does not hold a module"):
        read_torchscript_state(planted(archive[0], tmp_path, payload))
    assert torch._utils._rebuild_tensor_v2.__defaults__ == before
