"""Devices by name, and what a device runs by default (the precision; the pipeline's grouping of
stages is decided from the device in `keep.pipeline.options.stage_groups`)."""

from __future__ import annotations

import torch

from .errors import KeepError
from .precision import PRECISIONS

PRECISION_CHOICES = ("auto", *PRECISIONS)  # what `--precision` takes: auto, by the device (`resolve_precision`)


def resolve_device(name: str) -> torch.device:
    """`cpu`, `cuda`, `cuda:N`, `mps` or `auto` -> a `torch.device` that exists here, else KeepError."""
    name = str(name).strip()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise KeepError(f"unknown device '{name}'; use cpu, cuda, cuda:N or auto") from None
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise KeepError(f"device '{name}' asked for, but no CUDA GPU is available here; use --device cpu")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise KeepError(f"device '{name}' does not exist: this machine has {count} CUDA device(s)")
        return device
    if device.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise KeepError("device 'mps' asked for, but Metal is not available here; use --device cpu")
        return device
    raise KeepError(f"device '{name}' is not supported; use cpu, cuda, cuda:N or auto")


def resolve_precision(precision: str, device: str) -> str:
    """The network's precision on `device` (`keep.precision` names): `auto` is fp16 on a CUDA GPU, whose codes
    agreed with fp32 on 99.5% of the golden case on an H100 (bf16: 95.1%; docs/speed.md), and exact fp32
    elsewhere; any other name is kept as it is (names are checked where they are chosen: `PRECISION_CHOICES`)."""
    if precision != "auto":
        return precision
    return "fp16" if str(device).startswith("cuda") else "fp32"
