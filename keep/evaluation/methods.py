"""The methods compared in the table, each `(lq clip, size) -> restored clip`, uint8 RGB.

- `bicubic`: LQ upsampled x4 with bicubic interpolation (OpenCV), which is also the network's input:
  the test set's LQ is 128 and the network takes 512 faces (docs/benchmark.md), so every network
  method sees exactly the `bicubic` frames.
- `keep_per_frame`: the network without temporal propagation: every frame is a fresh one-frame clip
  (`model.run(frame, state=None)`): no prior, so the posterior is the observation (gain 0), and no
  previous frame for the cross-frame attention (no CFA). tests/test_benchmark.py checks that this
  equals the whole clip run with the gain forced to 0 and the CFA modules removed.
- `keep`: the full network streamed over the whole clip (`keep.streaming.StreamingRestorer`).
The network runs at the model's precision and fidelity (`keep.restorer.Restorer`, set by the runner).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import cv2
import numpy as np
import torch
from tqdm import tqdm

from ..errors import KeepError
from ..image import to_tensor, to_uint8
from ..restorer import Restorer
from ..streaming import StreamingRestorer
from .config import ModelConfig


def upsample(lq: np.ndarray, size: int) -> np.ndarray:
    """`(T, h, w, 3)` uint8 -> `(T, size, size, 3)` uint8, bicubic."""
    return np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_CUBIC) for f in lq])


def run_bicubic(lq: np.ndarray, size: int, model: Restorer | None, cfg: ModelConfig, bar: tqdm) -> np.ndarray:
    out = upsample(lq, size)
    bar.update(len(out))
    return out


@torch.no_grad()
def run_keep_per_frame(lq: np.ndarray, size: int, model: Restorer | None, cfg: ModelConfig, bar: tqdm) -> np.ndarray:
    device = model.device
    outs = []
    for frame in upsample(lq, size):
        outs.append(to_uint8(model.run(to_tensor(frame, device)[None, None], None, state=None).out[0, 0]))
        bar.update(1)
    return np.stack(outs)


@torch.no_grad()
def run_keep(lq: np.ndarray, size: int, model: Restorer | None, cfg: ModelConfig, bar: tqdm) -> np.ndarray:
    device = model.device
    restorer = StreamingRestorer(model, window=cfg.window, gain_context=cfg.gain_context, mode=cfg.stream_mode)
    frames: Iterator[torch.Tensor] = (to_tensor(f, device)[None] for f in upsample(lq, size))
    outs = []
    for out in restorer.restore(frames):
        outs.append(to_uint8(out[0]))
        bar.update(1)
    return np.stack(outs)


Method = Callable[[np.ndarray, int, "Restorer | None", ModelConfig, tqdm], np.ndarray]
METHODS: dict[str, tuple[Method, bool]] = {  # name -> (runner, needs the network)
    "bicubic": (run_bicubic, False),
    "keep_per_frame": (run_keep_per_frame, True),
    "keep": (run_keep, True),
}


def check_methods(names: tuple[str, ...]) -> None:
    if not names:
        raise KeepError(f"no methods to run; choose from {list(METHODS)}")
    for name in names:
        if name not in METHODS:
            raise KeepError(f"unknown method '{name}'; choose from {list(METHODS)}")
