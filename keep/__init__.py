"""KEEP: Kalman-inspired feature propagation for video face super-resolution (ECCV 2024).

import keep
model = keep.load_model("keep")            # current release (local file or download), a Restorer
out = model(lq)                            # (B, T, 3, 512, 512) in [-1, 1]; flows by its own GMFlow
out = model(lq, flows)                     # or given, frame t -> t-1 (B, T-1, 2, 512, 512)
model.fidelity = 0.5                       # CodeFormer's w: 0 quality .. 1 fidelity (also load_model(..., fidelity=))
streams = keep.StreamingRestorer(model)    # long videos, many faces: window by window, state carried
net = keep.load_network("keep")            # the bare nn.Module: net.run(lq, flows, fidelity=1.0)
"""

# ruff: noqa: E402  (the OpenMP wait policy must be set before the imports below load torch)
from .cli import passive_openmp_waits

passive_openmp_waits()  # idle OpenMP threads sleep instead of spinning (issue 10, keep/cli.py)

from .archs.keep_arch import KEEP, PRESETS, KEEPConfig, KEEPOutput, KEEPState
from .checkpoint import save_checkpoint
from .errors import KeepError, WeightsUnavailable
from .model import load_checkpoint, load_model, load_network
from .restorer import Restorer
from .streaming import StreamingRestorer

__version__ = "0.1.0"

__all__ = [
    "KEEP",
    "KEEPConfig",
    "KEEPOutput",
    "KEEPState",
    "KeepError",
    "PRESETS",
    "WeightsUnavailable",
    "Restorer",
    "StreamingRestorer",
    "load_checkpoint",
    "load_model",
    "load_network",
    "save_checkpoint",
]
