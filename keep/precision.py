"""Numeric precision modes and inference-only speed settings (issue #2, docs/speed.md).

- `autocast(device, precision)`: the context the network runs in: `fp32` (exact), `bf16`, `fp16`.
- `prepare_for_inference(model, channels_last=...)`: layout change that makes the convolutions
  (97% of the work) faster with oneDNN / cuDNN and changes no weight value, so the output stays that
  of the plain network (tests/test_precision.py, tests/test_golden.py). The model stays trainable.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str) -> torch.dtype | None:
    """The autocast dtype of a precision name (None for fp32); ValueError naming the valid names."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision '{precision}'; choose one of {list(PRECISIONS)}")
    return PRECISIONS[precision]


def autocast(device: str | torch.device, precision: str = "fp32") -> contextlib.AbstractContextManager:
    """Context in which the network runs at `precision` on `device` ('cpu' or 'cuda')."""
    dtype = check_precision(precision)
    if dtype is None:
        return contextlib.nullcontext()
    device_type = torch.device(device).type
    return torch.autocast(device_type=device_type, dtype=dtype)


def prepare_for_inference(model: nn.Module, *, channels_last: bool = True) -> nn.Module:
    """Switch every 4-D weight to the channels-last (NHWC) layout, in place; returns `model`.

    Convolutions then produce channels-last activations, which oneDNN (CPU) and cuDNN (tensor cores)
    run without layout reorders; the attention blocks read channels-last maps as `(N, h*w, C)` tokens
    for free. Values are untouched: the output equals the contiguous model's up to float rounding
    order (same codes on the golden case). Inputs need no change: the first convolution propagates
    the layout.
    """
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return model


__all__ = ["PRECISIONS", "autocast", "check_precision", "prepare_for_inference"]
