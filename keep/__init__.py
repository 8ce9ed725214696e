"""KEEP: Kalman-inspired feature propagation for video face super-resolution (ECCV 2024).

import keep
model = keep.load_model("keep")            # current release (local file or download), a Restorer
out = model(lq)                            # (B, T, 3, 512, 512) in [-1, 1]; flows by its own GMFlow
out = model(lq, flows)                     # or given, frame t -> t-1 (B, T-1, 2, 512, 512)
model.fidelity = 0.5                       # CodeFormer's w: 0 quality .. 1 fidelity (also load_model(..., fidelity=))
streams = keep.StreamingRestorer(model)    # long videos, many faces: window by window, state carried
net = keep.load_network("keep")            # the bare nn.Module: net.run(lq, flows, fidelity=1.0)

`import keep` imports nothing heavy and changes nothing: the names below load their modules (and torch)
when first used, so an entry point can ask for passive OpenMP waits before torch loads (keep/threads.py).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_MODULES = {  # the module that defines each name of the package
    "archs.keep_arch": ("KEEP", "KEEPConfig", "KEEPOutput", "KEEPState", "PRESETS"),
    "checkpoint": ("save_checkpoint",),
    "errors": ("KeepError", "WeightsUnavailable"),
    "model": ("load_checkpoint", "load_model", "load_network"),
    "restorer": ("Restorer",),
    "streaming": ("StreamingRestorer",),
}
_EXPORTS = {name: module for module, names in _MODULES.items() for name in names}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'keep' has no attribute '{name}'")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
