"""KEEP: Kalman-inspired feature propagation for video face super-resolution (ECCV 2024).

import keep
model = keep.load_model("keep")            # released weights (local file or download)
out = model(lq, flows)                     # (B, T, 3, 512, 512) in [-1, 1]
"""

from .archs.keep_arch import KEEP, PRESETS, KEEPConfig, KEEPOutput, KEEPState
from .checkpoint import save_checkpoint
from .errors import KeepError, WeightsUnavailable
from .model import load_model

__version__ = "0.1.0"

__all__ = [
    "KEEP",
    "KEEPConfig",
    "KEEPOutput",
    "KEEPState",
    "KeepError",
    "PRESETS",
    "WeightsUnavailable",
    "load_model",
    "save_checkpoint",
]
