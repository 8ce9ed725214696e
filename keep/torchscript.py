"""The tensors of a TorchScript archive, read without running any of its code.

Some weights are published only as TorchScript archives (OpenAI's CLIP: `RN50.pt`, `ViT-B-32.pt`).
`torch.jit.load` compiles and runs the archive's `code/` folder and unpickles `data.pkl` with every
class the archive names; this reader does neither. A TorchScript archive is a zip file:

    <name>/data.pkl        the module tree: objects of `__torch__.*` classes whose state (a dict) holds
                           sub-modules, tensors and plain values
    <name>/data/<key>      the raw bytes of each tensor storage
    <name>/constants.pkl   constants of the compiled code (not needed for the weights)
    <name>/code/...        the compiled code (never opened here)

`data.pkl` is unpickled with a `pickle.Unpickler` whose `find_class` allows only what a state dict
needs: torch's tensor-rebuild functions (the ones `torch.load(weights_only=True)` allows,
`torch/_weights_only_unpickler.py`), the storage types, `collections.OrderedDict`, the identity
helpers TorchScript writes around lists (`torch.jit._pickle.build_intlist`, ...), and for every
`__torch__.*` class an inert placeholder that only records the state it is given. Any other global
(`os.system`, `builtins.eval`, ...) stops the read before anything is called. Storages come from
`data/<key>` through `persistent_load`. The placeholders are then walked into a flat state dict
(`"visual.conv1.weight" -> tensor`). The archive does not say which tensors are parameters or buffers
(that is in its code): every tensor attribute of every module is returned, as
`torch.jit.load(path).state_dict()` returns them for traced or scripted modules without plain tensor
attributes.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import zipfile

import torch
from torch._weights_only_unpickler import _tensor_rebuild_functions

from .errors import KeepError

JIT_LIST_HELPERS = ("build_intlist", "build_tensorlist", "build_doublelist", "build_boollist", "restore_type_tag")


class ScriptModuleState:
    """Stands for one object of a `__torch__.*` class: records what the pickle gives it, runs nothing."""

    qualified_name = "__torch__"

    def __new__(cls, *args):
        obj = super().__new__(cls)
        obj.args, obj.state = args, {}
        return obj

    def __setstate__(self, state) -> None:
        self.state = state if isinstance(state, dict) else {"": state}


def _identity(value, *_):
    return value


def _wrapped(function):
    def call(*args, **kwargs):
        return function(*args, **kwargs)

    return call


class RefusedGlobal(pickle.UnpicklingError):
    pass


class _ArchiveUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str):
        super().__init__(io.BytesIO(data))
        self.archive, self.prefix = archive, prefix
        self.placeholders: dict[str, type] = {}

        # fresh wrappers per read: a BUILD opcode aimed at an allowed global can only change the wrapper
        self.allowed = {f"torch._utils.{f.__name__}": _wrapped(f) for f in _tensor_rebuild_functions()}
        self.allowed["collections.OrderedDict"] = type("OrderedDict", (collections.OrderedDict,), {})
        self.allowed |= {f"torch.jit._pickle.{name}": _wrapped(_identity) for name in JIT_LIST_HELPERS}

    def find_class(self, module: str, name: str):
        full = f"{module}.{name}"
        if full in self.allowed:
            return self.allowed[full]
        if module == "torch" and name.endswith("Storage") and name != "Storage":
            return torch.serialization.StorageType(name)  # a dtype marker, as the weights-only loader uses
        if module == "__torch__" or module.startswith("__torch__."):
            if full not in self.placeholders:
                self.placeholders[full] = type(name, (ScriptModuleState,), {"qualified_name": full})
            return self.placeholders[full]
        raise RefusedGlobal(full)

    def persistent_load(self, saved_id):
        if not (isinstance(saved_id, tuple) and len(saved_id) == 5 and saved_id[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {saved_id!r:.60}")
        _, storage_type, key, _location, numel = saved_id
        dtype = storage_type.dtype
        raw = bytearray(self.archive.read(f"{self.prefix}data/{key}"))
        if len(raw) != numel * torch._utils._element_size(dtype):
            raise pickle.UnpicklingError(f"storage {key}: {len(raw)} bytes for {numel} {dtype} values")
        untyped = torch.frombuffer(raw, dtype=torch.uint8).untyped_storage() if raw else torch.UntypedStorage(0)
        return torch.storage.TypedStorage(wrap_storage=untyped, dtype=dtype, _internal=True)


def is_torchscript_archive(path: str | os.PathLike) -> bool:
    """A zip file with `constants.pkl` beside `data.pkl` (the test `torch.load` uses)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(n.endswith("/constants.pkl") or n == "constants.pkl" for n in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _flatten(obj, prefix: str, out: dict[str, torch.Tensor], seen: set[int]) -> None:
    if id(obj) in seen:
        return
    seen.add(id(obj))
    for name, value in obj.state.items():
        if isinstance(value, torch.Tensor):
            out[prefix + name] = value.detach()
        elif isinstance(value, ScriptModuleState):
            _flatten(value, f"{prefix}{name}.", out, seen)


def read_torchscript_state(path: str | os.PathLike, what: str = "weights") -> dict[str, torch.Tensor]:
    """Flat `{name: tensor}` of every tensor attribute of the archive's module tree (module docstring).
    A global outside the allowed set, or a damaged archive, is one `KeepError` line naming the file."""
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [n for n in archive.namelist() if n.endswith("data.pkl") and n.count("/") <= 1]
            if len(pickles) != 1:
                raise KeepError(f"cannot read {what} {path}: not a TorchScript archive (no single data.pkl)")
            prefix = pickles[0][: -len("data.pkl")]
            if f"{prefix}byteorder" in archive.namelist():
                if archive.read(f"{prefix}byteorder").strip() != b"little":
                    raise KeepError(f"cannot read {what} {path}: big-endian TorchScript archives are not supported")
            root = _ArchiveUnpickler(archive.read(pickles[0]), archive, prefix).load()
    except RefusedGlobal as exc:
        raise KeepError(
            f"cannot read {what} {path}: its data.pkl asks for {exc}, which is not a tensor or module state; "
            "this project reads only tensors from TorchScript archives, so that no file can run code when loaded"
        ) from None
    except KeepError:
        raise
    except Exception as exc:  # zip, pickle and storage errors of every kind end in one line
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise KeepError(f"cannot read {what} {path}: {type(exc).__name__}: {first_line}") from None
    if not isinstance(root, ScriptModuleState):
        raise KeepError(f"cannot read {what} {path}: data.pkl does not hold a module")
    state: dict[str, torch.Tensor] = {}
    _flatten(root, "", state, set())
    return state
