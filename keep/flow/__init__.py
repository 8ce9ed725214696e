"""Optical flow estimators, chosen by name (`build_flow`).

Every estimator is a callable `flow = estimator(target, source)`: frames `(N, 3, H, W)` in [-1, 1]
-> flow `(N, 2, H, W)` in pixels (channel 0 = x, 1 = y) from `target` to `source`, i.e. `source`
sampled at `p + flow(p)` looks like `target`. KEEP asks for target = frame t, source = frame t-1.

- `raft_large`, `raft_small`: torchvision's RAFT; weights from a local file, `weights/`, the caches or
  torchvision's download (`keep.weights`), with a clear message when none is possible.
- `dis`: OpenCV's dense inverse search; classical, no weights, runs anywhere (the offline default).
- `auto`: `raft_large` when its weights are at hand, else `dis`, saying which.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from ..errors import KeepError, WeightsUnavailable
from .dis import DISFlow
from .raft import RAFTFlow

log = logging.getLogger(__name__)

FlowEstimator = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

FLOW_ESTIMATORS: dict[str, Callable[..., FlowEstimator]] = {
    "raft_large": lambda **kw: RAFTFlow("raft_large", **kw),
    "raft_small": lambda **kw: RAFTFlow("raft_small", **kw),
    "dis": lambda **kw: DISFlow(**{k: v for k, v in kw.items() if k == "preset"}),
}


def build_flow(name: str, *, device: str | torch.device = "cpu", weights: str | None = None) -> FlowEstimator:
    """Flow estimator by name: one of `raft_large`, `raft_small`, `dis`, `auto`."""
    if name == "auto":
        try:
            estimator = build_flow("raft_large", device=device, weights=weights)
        except WeightsUnavailable as exc:
            log.warning("flow: RAFT weights unavailable (%s); using OpenCV DIS", str(exc).split(":")[0])
            return build_flow("dis")
        log.info("flow: raft_large")
        return estimator
    if name not in FLOW_ESTIMATORS:
        raise KeepError(f"unknown flow estimator '{name}'; choose one of: auto, {', '.join(FLOW_ESTIMATORS)}")
    kwargs = {"device": device, "weights": weights} if name.startswith("raft") else {}
    return FLOW_ESTIMATORS[name](**kwargs)


__all__ = ["build_flow", "FLOW_ESTIMATORS", "FlowEstimator", "DISFlow", "RAFTFlow"]
