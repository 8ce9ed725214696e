"""`load_model`: any supported KEEP checkpoint (or preset name) -> a ready network."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import torch

from .archs.keep_arch import KEEP, PRESETS
from .checkpoint import read_checkpoint
from .errors import KeepError
from .weights import REGISTRY, resolve_weights

log = logging.getLogger(__name__)


def load_model(
    source: str | os.PathLike | Mapping[str, Any] = "keep",
    *,
    device: str | torch.device = "cpu",
    flow: str | None = "dis",
    use_ema: bool = True,
    **overrides: Any,
) -> KEEP:
    """Load a KEEP network in eval mode.

    source: a checkpoint path, a registry name (`"keep"`: the released `KEEP-a1a14d46.pth`), a state
        dict / checkpoint object already in memory (released v0.1.0 layout, later upstream layout
        with `params_ema`, or this project's own), or `"preset:<name>"` for randomly initialised
        weights of a preset configuration (`preset:tiny`, `preset:released`).
    flow: estimator used when `model(lq)` gets no flows (`keep.flow.build_flow` name), or None.
    overrides: KEEPConfig fields that do not change the weights' shapes (e.g. `cft_weight=0.5`).
    """
    if isinstance(source, (str, os.PathLike)) and str(source).startswith("preset:"):
        name = str(source).split(":", 1)[1]
        if name not in PRESETS:
            raise KeepError(f"unknown preset '{name}'; choose one of {sorted(PRESETS)}")
        model = KEEP.from_config(replace(PRESETS[name], **overrides))
    else:
        if isinstance(source, (str, os.PathLike)):
            path = resolve_weights(source)
            try:
                obj = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as exc:
                raise KeepError(f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}") from None
        else:
            obj = source
        config, state = read_checkpoint(obj, use_ema=use_ema)
        model = KEEP.from_config(replace(config, **overrides))
        result = model.load_state_dict(state, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise KeepError(
                "checkpoint does not match the KEEP network: "
                f"missing {result.missing_keys[:4]}{'...' if len(result.missing_keys) > 4 else ''}, "
                f"unexpected {result.unexpected_keys[:4]}{'...' if len(result.unexpected_keys) > 4 else ''}"
            )
    if flow is not None:
        from .flow import build_flow

        model.flow_fn = build_flow(flow, device=device)
    return model.to(device).eval()


__all__ = ["load_model", "REGISTRY"]
