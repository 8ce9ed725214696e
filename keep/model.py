"""`load_network`: any supported KEEP checkpoint (or preset name) -> the network in eval mode.
`load_model`: the same network with its flow estimator (`keep.restorer.Restorer`), ready for `model(lq)`.
`load_checkpoint`: the network and the GMFlow weights its checkpoint carries (training keeps them)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, NamedTuple

import torch

from .archs.keep_arch import KEEP, PRESETS
from .checkpoint import read_checkpoint
from .errors import KeepError
from .restorer import Restorer
from .weights import REGISTRY, read_tensors, resolve_weights


class LoadedCheckpoint(NamedTuple):
    network: KEEP  # in eval mode, on the device asked for
    flow_state: dict[str, torch.Tensor] | None  # GMFlow weights (`keep.flow.gmflow.GMFlowNet` names) or None


def check_fidelity(value: float) -> float:
    """The fidelity (CFT weight, CodeFormer's `-w`) must lie in [0, 1]; KeepError otherwise."""
    if not 0 <= value <= 1:
        raise KeepError(f"fidelity (CFT weight) must be between 0 and 1, got {value}")
    return value


def load_checkpoint(
    source: str | os.PathLike | Mapping[str, Any] = "keep",
    *,
    device: str | torch.device = "cpu",
    use_ema: bool = True,
    **overrides: Any,
) -> LoadedCheckpoint:
    """`load_network` that also returns the GMFlow weights of the checkpoint (None for presets and
    checkpoints without them)."""
    if "cft_weight" in overrides:
        check_fidelity(overrides["cft_weight"])
    if isinstance(source, (str, os.PathLike)) and str(source).startswith("preset:"):
        name = str(source).split(":", 1)[1]
        if name not in PRESETS:
            raise KeepError(f"unknown preset '{name}'; choose one of {sorted(PRESETS)}")
        return LoadedCheckpoint(KEEP(replace(PRESETS[name], **overrides)).to(device).eval(), None)
    if isinstance(source, (str, os.PathLike)):
        path = resolve_weights(source)
        obj = read_tensors(path, "checkpoint")
    else:
        obj = source
    checkpoint = read_checkpoint(obj, use_ema=use_ema)
    model = KEEP(replace(checkpoint.config, **overrides))
    result = model.load_state_dict(checkpoint.state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise KeepError(
            "checkpoint does not match the KEEP network: "
            f"missing {result.missing_keys[:4]}{'...' if len(result.missing_keys) > 4 else ''}, "
            f"unexpected {result.unexpected_keys[:4]}{'...' if len(result.unexpected_keys) > 4 else ''}"
        )
    return LoadedCheckpoint(model.to(device).eval(), checkpoint.flow_state)


def load_network(
    source: str | os.PathLike | Mapping[str, Any] = "keep",
    *,
    device: str | torch.device = "cpu",
    use_ema: bool = True,
    **overrides: Any,
) -> KEEP:
    """Load a KEEP network in eval mode.

    source: a checkpoint path, a registry name (`"keep"`: the current release `KEEP-b76feb75.pth`;
        `keep_asian`, `keep_v0.1.0`: see `keep.weights.REGISTRY`), a state dict / checkpoint object
        already in memory (released v0.1.0 layout, v1.0.0 layout with `params_ema`, or this project's
        own), or `"preset:<name>"` for randomly initialised weights (`preset:tiny`, `preset:released`).
    overrides: KEEPConfig fields that do not change the weights' shapes, e.g. `cft_weight=0.5` (the
        fidelity, in [0, 1]).
    """
    return load_checkpoint(source, device=device, use_ema=use_ema, **overrides).network


def load_model(
    source: str | os.PathLike | Mapping[str, Any] = "keep",
    *,
    device: str | torch.device = "cpu",
    flow: str | None = "auto",
    use_ema: bool = True,
    **overrides: Any,
) -> Restorer:
    """`load_network(source, ...)` with a flow estimator: callable as `model(lq)` and `model(lq, flows)`.

    flow: estimator used when no flows are given (`keep.flow.build_flow` name), or None. `auto` (the
        default) takes the checkpoint's own GMFlow when it carries one (the released checkpoints do),
        so the flows are those the authors' system computes; `gmflow` insists on it.
    """
    network, flow_state = load_checkpoint(source, device=device, use_ema=use_ema, **overrides)
    estimator = None
    if flow is not None:
        from .flow import build_flow

        estimator = build_flow(flow, device=device, gmflow_state=flow_state)
    return Restorer(network, estimator)


__all__ = ["load_checkpoint", "load_model", "load_network", "check_fidelity", "REGISTRY"]
