"""Numeric precision modes for inference: `fp32` (exact), `bf16`, `fp16`."""

from __future__ import annotations

import contextlib

import torch

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: str | torch.device, precision: str = "fp32") -> contextlib.AbstractContextManager:
    """Context in which the network runs at `precision` on `device` ('cpu' or 'cuda')."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision '{precision}'; choose one of {list(PRECISIONS)}")
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    device_type = torch.device(device).type
    return torch.autocast(device_type=device_type, dtype=dtype)
