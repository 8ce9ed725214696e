"""The one door to a KEEP network: inference, the benchmark, training and the scripts all build it here.

`load_network`: any supported checkpoint (or preset name) -> the network in eval mode.
`load_model`: the same network with its flow estimator and run settings (`keep.restorer.Restorer`),
    ready for `model(lq)`.
`load_checkpoint`: the network and the GMFlow weights its checkpoint carries (training keeps them).

Overrides are `KEEPConfig` fields, typed and checked (`keep.config.from_dict`): an unknown field or a
value of the wrong type is one `KeepError` naming the fields. The fidelity is not one of them: it is
an argument of the run (`load_model(..., fidelity=...)`, `KEEP.run(..., fidelity=...)`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any, NamedTuple

import torch

from .archs.keep_arch import KEEP, PRESETS, KEEPConfig
from .checkpoint import read_checkpoint, read_checkpoint_file
from .config import from_dict
from .errors import KeepError
from .flow import build_flow
from .restorer import Restorer
from .weights import REGISTRY, resolve_weights

Source = str | os.PathLike | Mapping[str, Any]


class LoadedCheckpoint(NamedTuple):
    network: KEEP  # in eval mode, on the device asked for
    flow_state: dict[str, torch.Tensor] | None  # GMFlow weights (`keep.flow.gmflow.GMFlowNet` names) or None


def network_config(base: KEEPConfig, overrides: Mapping[str, Any]) -> KEEPConfig:
    """`base` with `overrides` (KEEPConfig fields), typed and checked; KeepError naming the fields."""
    for name in ("fidelity", "cft_weight"):
        if name in overrides:
            raise KeepError(
                f"'{name}' is not part of the network's configuration: the fidelity is chosen when the model "
                "runs (keep.load_model(..., fidelity=...), KEEP.run(..., fidelity=...), inference.py --fidelity)"
            )
    return from_dict(KEEPConfig, {**asdict(base), **overrides})


def _build(config: KEEPConfig, state: Mapping[str, torch.Tensor] | None = None) -> KEEP:
    """`KEEP(config)`, with `state` loaded strictly when given; KeepError when they do not fit."""
    try:
        network = KEEP(config)
    except ValueError as exc:  # e.g. a fusion scale the decoder does not have
        raise KeepError(f"cannot build the KEEP network: {exc}") from None
    if state is None:
        return network
    try:
        result = network.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shapes that differ
        details = [line.strip() for line in str(exc).splitlines()[1:3]]
        raise KeepError(f"checkpoint does not match the KEEP network: {'; '.join(details)}") from None
    missing, unexpected = result.missing_keys, result.unexpected_keys
    if missing or unexpected:
        raise KeepError(
            "checkpoint does not match the KEEP network: "
            f"missing {missing[:4]}{'...' if len(missing) > 4 else ''}, "
            f"unexpected {unexpected[:4]}{'...' if len(unexpected) > 4 else ''}"
        )
    return network


def load_checkpoint(
    source: Source = "keep", *, device: str | torch.device = "cpu", use_ema: bool = True, **overrides: Any
) -> LoadedCheckpoint:
    """`load_network` that also returns the GMFlow weights of the checkpoint (None for presets and
    checkpoints without them)."""
    if isinstance(source, (str, os.PathLike)) and str(source).startswith("preset:"):
        name = str(source).split(":", 1)[1]
        if name not in PRESETS:
            raise KeepError(f"unknown preset '{name}'; choose one of {sorted(PRESETS)}")
        return LoadedCheckpoint(_build(network_config(PRESETS[name], overrides)).to(device).eval(), None)
    if not isinstance(source, (str, os.PathLike)):  # a checkpoint object already in memory
        checkpoint = read_checkpoint(source, use_ema=use_ema)
    else:
        path = resolve_weights(source)
        try:
            checkpoint = read_checkpoint(read_checkpoint_file(path), use_ema=use_ema)
        except KeepError as exc:
            raise KeepError(f"{path}: {exc}" if str(path) not in str(exc) else str(exc)) from None
    network = _build(network_config(checkpoint.config, overrides), checkpoint.state)
    return LoadedCheckpoint(network.to(device).eval(), checkpoint.flow_state)


def load_network(
    source: Source = "keep", *, device: str | torch.device = "cpu", use_ema: bool = True, **overrides: Any
) -> KEEP:
    """Load a KEEP network in eval mode.

    source: a checkpoint path (`.pth` or `.safetensors`), a registry name (`"keep"`: the current release
        `KEEP-b76feb75.pth`; `keep_asian`, `keep_v0.1.0`: see `keep.weights.REGISTRY`), a state dict /
        checkpoint object already in memory (released v0.1.0 layout, v1.0.0 layout with `params_ema`, or
        this project's own), or `"preset:<name>"` for randomly initialised weights (`preset:tiny`,
        `preset:released`).
    overrides: KEEPConfig fields; with a checkpoint, only those that keep the weights' shapes.
    """
    return load_checkpoint(source, device=device, use_ema=use_ema, **overrides).network


def load_model(
    source: Source = "keep",
    *,
    device: str | torch.device = "cpu",
    flow: str | None = "auto",
    precision: str = "fp32",
    fidelity: float = 1.0,
    cuda_graphs: bool = True,
    use_ema: bool = True,
    **overrides: Any,
) -> Restorer:
    """`load_network(source, ...)` with a flow estimator and the run's settings: callable as `model(lq)`
    and `model(lq, flows)`.

    flow: estimator used when no flows are given (`keep.flow.build_flow` name), or None. `auto` (the
        default) takes the checkpoint's own GMFlow when it carries one (the released checkpoints do),
        so the flows are those the authors' system computes; `gmflow` insists on it.
    precision, fidelity, cuda_graphs: the `Restorer`'s settings (`fp32` is exact; fidelity in [0, 1],
        1 in every release).
    """
    network, flow_state = load_checkpoint(source, device=device, use_ema=use_ema, **overrides)
    estimator = None
    if flow is not None:
        estimator = build_flow(flow, device=device, gmflow_state=flow_state)
    return Restorer(network, estimator, precision=precision, fidelity=fidelity, cuda_graphs=cuda_graphs)


__all__ = ["load_checkpoint", "load_model", "load_network", "network_config", "REGISTRY"]
