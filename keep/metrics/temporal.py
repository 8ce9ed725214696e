"""Flow-based temporal warping error (TWE, Lai et al., "Learning Blind Video Temporal Consistency",
ECCV 2018), and the per-clip fluctuation statistics of per-frame metrics.

TWE of a restored clip `out` (T frames) given the GT clip `gt`:
    flow_t = flow(target = gt_t, source = gt_{t-1})                  (estimated on GT, so every method
    warped_t = out_{t-1} sampled at p + flow_t(p)                     is judged with the same motion)
    M_t = pixels whose forward-backward flow is consistent (Sundaram et al. 2010) and that stay inside
    TWE = mean over t >= 1 of  sum(M_t * (out_t - warped_t)^2) / (3 * sum(M_t)),  images in [0, 1].
Lower is better; the benchmark reports it x1e-3. A static clip restored identically in every frame
scores 0; flicker raises it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..archs.flow_warp import flow_warp
from ..image import to_tensor

FlowFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def consistent_flows(gt: np.ndarray, flow_fn: FlowFn) -> tuple[torch.Tensor, torch.Tensor]:
    """GT clip `(T, H, W, 3)` uint8 -> flows `(T-1, 2, H, W)` (frame t -> t-1, pixels) and validity
    masks `(T-1, 1, H, W)` (forward-backward consistent and inside the frame)."""
    frames = to_tensor(gt)
    current, previous = frames[1:], frames[:-1]
    backward = flow_fn(current, previous)  # t -> t-1
    forward = flow_fn(previous, current)  # t-1 -> t
    forward_at = flow_warp(forward, backward)  # forward flow at the matched point in frame t-1
    mismatch = (backward + forward_at).pow(2).sum(1, keepdim=True)
    magnitude = backward.pow(2).sum(1, keepdim=True) + forward_at.pow(2).sum(1, keepdim=True)
    inside = flow_warp(torch.ones_like(frames[1:, :1]), backward) > 0.999
    valid = (mismatch < 0.01 * magnitude + 0.5) & inside
    return backward, valid


def warping_error(out: np.ndarray, flows: torch.Tensor, valid: torch.Tensor) -> float:
    """TWE of a restored clip `(T, H, W, 3)` uint8 with GT flows/masks from `consistent_flows`.
    NaN for a single-frame clip."""
    if out.shape[0] < 2:
        return float("nan")
    frames = (to_tensor(out) + 1.0) / 2.0
    warped = flow_warp(frames[:-1], flows)
    error = (frames[1:] - warped).pow(2) * valid
    per_pair = error.sum(dim=(1, 2, 3)) / (3 * valid.sum(dim=(1, 2, 3)).clamp(min=1))
    return float(per_pair.mean())


def fluctuation(values: np.ndarray | list[float]) -> float:
    """Fluctuation of a per-frame metric within a clip: population std over the frames (ddof=0)."""
    values = np.asarray(values, dtype=np.float64)
    return float(values.std()) if values.size else float("nan")
