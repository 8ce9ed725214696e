"""`load_network`: any supported KEEP checkpoint (or preset name) -> the network in eval mode.
`load_model`: the same network with its flow estimator (`keep.restorer.Restorer`), ready for `model(lq)`."""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import torch

from .archs.keep_arch import KEEP, PRESETS
from .checkpoint import read_checkpoint
from .errors import KeepError
from .restorer import Restorer
from .weights import REGISTRY, resolve_weights

log = logging.getLogger(__name__)


def load_network(
    source: str | os.PathLike | Mapping[str, Any] = "keep",
    *,
    device: str | torch.device = "cpu",
    use_ema: bool = True,
    **overrides: Any,
) -> KEEP:
    """Load a KEEP network in eval mode.

    source: a checkpoint path, a registry name (`"keep"`: the released `KEEP-a1a14d46.pth`), a state
        dict / checkpoint object already in memory (released v0.1.0 layout, later upstream layout
        with `params_ema`, or this project's own), or `"preset:<name>"` for randomly initialised
        weights of a preset configuration (`preset:tiny`, `preset:released`).
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
            except pickle.UnpicklingError:  # weights_only refused it: loading it could run code
                raise KeepError(
                    f"cannot read checkpoint {path}: it holds Python objects other than tensors and plain data "
                    "(refused: unpickling them could run code)"
                ) from None
            except Exception as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else "empty or truncated file"
                raise KeepError(f"cannot read checkpoint {path}: {type(exc).__name__}: {first}") from None
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
    return model.to(device).eval()


def load_model(
    source: str | os.PathLike | Mapping[str, Any] = "keep",
    *,
    device: str | torch.device = "cpu",
    flow: str | None = "dis",
    use_ema: bool = True,
    **overrides: Any,
) -> Restorer:
    """`load_network(source, ...)` with a flow estimator: callable as `model(lq)` and `model(lq, flows)`.

    flow: estimator used when no flows are given (`keep.flow.build_flow` name), or None.
    """
    network = load_network(source, device=device, use_ema=use_ema, **overrides)
    estimator = None
    if flow is not None:
        from .flow import build_flow

        estimator = build_flow(flow, device=device)
    return Restorer(network, estimator)


__all__ = ["load_model", "load_network", "REGISTRY"]
