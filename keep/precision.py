"""Numeric precision modes and inference-only speed settings (issue #2, docs/speed.md).

- `autocast(device, precision)`: the context the network runs in: `fp32` (exact), `bf16`, `fp16`.
- `prepare_for_inference(model, channels_last=...)`: layout change that makes the convolutions
  (97% of the work) faster with oneDNN / cuDNN and changes no weight value. Not bit-exact: on the
  golden case the codes stay identical but the output moves by up to 1.5e-3 (oneDNN's NHWC
  convolution and group norm round differently), over the 1e-3 parity bound; the plain (NCHW)
  layout is the exact mode. The model stays trainable.
- `reuse_freed_memory()`: CPU allocator setting for large activations (Linux, glibc).
"""

from __future__ import annotations

import contextlib
import ctypes
import sys

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
    for free. Values are untouched, but the rounding differs (see the module docstring): same codes
    on the golden case, output within 2e-3. Inputs need no change: the first convolution propagates
    the layout.
    """
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def reuse_freed_memory() -> bool:
    """Make glibc malloc keep freed memory for reuse instead of returning it to the system.

    By default every block over 32 MiB (one 512 px activation at 64 channels is 64 MiB) is a fresh
    `mmap`, so each layer's output pays page faults on first touch and the kernel zeroes it. Serving
    them from the heap and never trimming it removes that cost (docs/speed.md has the measured gain)
    at the price of keeping the process at its peak footprint. Process-wide and irreversible here;
    returns False (doing nothing) where glibc's `mallopt` is not available.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # glibc malloc.h
    return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))


__all__ = ["PRECISIONS", "autocast", "check_precision", "prepare_for_inference", "reuse_freed_memory"]
