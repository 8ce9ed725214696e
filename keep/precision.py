"""Numeric precision modes and the CPU allocator setting of inference (docs/speed.md).

- `autocast(device, precision)`: the context the network runs in: `fp32` (exact), `tf32` (GPU: float32
  storage, TensorFloat-32 tensor cores for convolutions and matrix products), `bf16`, `fp16`.
- `tf32(enabled)`: TF32 on or off for the duration. PyTorch's default lets cuDNN convolutions use TF32,
  which on an H100 moved the golden case's output by 0.1 and flipped codes (and the released GMFlow's
  flows by up to 56 px with stand-in weights): `fp32` on a GPU therefore switches it off, and flows are
  always estimated in `fp32` (`keep.flow.clip_flows`, training and inference alike).
- `autocast_dtype(device_type)`: the one question "is autocast on, and in what dtype".
- `reuse_freed_memory()`: CPU allocator setting for large activations (Linux, glibc).
"""

from __future__ import annotations

import contextlib
import ctypes
import sys
from collections.abc import Iterator

import torch

PRECISIONS = {"fp32": None, "tf32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str) -> torch.dtype | None:
    """The autocast dtype of a precision name (None for fp32); ValueError naming the valid names."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision '{precision}'; choose one of {list(PRECISIONS)}")
    return PRECISIONS[precision]


def _tf32_flags() -> list[tuple[object, str, dict[bool, object]]]:
    """(object, attribute, {enabled: value}) of every TF32 switch, in the API this torch has (torch >= 2.9
    refuses reads of the legacy flags once the new ones were set, so only one API is ever used)."""
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    if hasattr(cudnn, "conv") and hasattr(cudnn.conv, "fp32_precision"):
        values = {True: "tf32", False: "ieee"}
        return [(cudnn.conv, "fp32_precision", values), (cudnn.rnn, "fp32_precision", values),
                (matmul, "fp32_precision", values)]  # fmt: skip
    values = {True: True, False: False}
    return [(cudnn, "allow_tf32", values), (matmul, "allow_tf32", values)]


def tf32_state() -> tuple:
    """The current TF32 settings (a CUDA graph captured under one setting is only valid under it)."""
    return tuple(getattr(obj, name) for obj, name, _ in _tf32_flags())


@contextlib.contextmanager
def tf32(enabled: bool) -> Iterator[None]:
    """TF32 tensor cores on or off for CUDA convolutions and float32 matrix products, restored after."""
    flags = _tf32_flags()
    saved = [getattr(obj, name) for obj, name, _ in flags]
    for obj, name, values in flags:
        setattr(obj, name, values[enabled])
    try:
        yield
    finally:
        for (obj, name, _), value in zip(flags, saved, strict=True):
            setattr(obj, name, value)


def autocast(device: str | torch.device, precision: str = "fp32") -> contextlib.AbstractContextManager:
    """Context in which the network runs at `precision` on `device` ('cpu' or 'cuda'), whatever context
    it is entered in (`fp32` and `tf32` switch off an enclosing autocast)."""
    dtype = check_precision(precision)
    device_type = torch.device(device).type
    stack = contextlib.ExitStack()
    if device_type == "cuda":
        stack.enter_context(tf32(precision == "tf32"))
    if dtype is not None:
        stack.enter_context(torch.autocast(device_type=device_type, dtype=dtype))
    elif autocast_dtype(device_type) is not None:
        stack.enter_context(torch.autocast(device_type=device_type, enabled=False))
    return stack


def autocast_dtype(device_type: str) -> torch.dtype | None:
    """The dtype autocast runs in on `device_type` ('cpu', 'cuda', ...), None when it is off."""
    try:
        enabled = torch.is_autocast_enabled(device_type)
        return torch.get_autocast_dtype(device_type) if enabled else None
    except (TypeError, AttributeError):  # torch < 2.4: one function per device type
        if device_type == "cpu":
            return torch.get_autocast_cpu_dtype() if torch.is_autocast_cpu_enabled() else None
        return torch.get_autocast_gpu_dtype() if torch.is_autocast_enabled() else None


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


__all__ = ["PRECISIONS", "autocast", "autocast_dtype", "check_precision", "reuse_freed_memory", "tf32", "tf32_state"]
