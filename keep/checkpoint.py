"""Checkpoints: the project's own self-describing format and the one converter for foreign layouts.

Three layouts load (`load_model`):
- ours: `{"format": "keep", "version": 1, "config": {...KEEPConfig}, "state_dict": {...}}` (+ optional
  `"ema"`, and `"flow_state_dict"`: the GMFlow weights a released model came with); written by
  `save_checkpoint` and by the trainer.
- released v0.1.0 (`KEEP-a1a14d46.pth`): a bare state dict with the authors' names
  (`encoder.`, `generator.`, `fuse_convs_dict.`, `cross_fuse.`, `kalman_filter.`, `flownet.`, ...);
- v1.0.0 (`KEEP-b76feb75.pth`, `KEEP_Asian-4765ebe0.pth`) and later: the same with `cft.` / `cfa.`
  names, stored under `params_ema` (or `params`).

Every foreign name goes through `convert_upstream_state_dict`, and loading is strict. The released
checkpoints carry the GMFlow flow network (`flownet.model.<name>`): it becomes `flow.<name>`, which
`read_checkpoint` returns apart from the network's weights (`keep.flow.gmflow.GMFlowNet` names).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, NamedTuple

import torch

from .archs.keep_arch import KEEP, PRESETS, KEEPConfig
from .errors import KeepError

FORMAT = "keep"
VERSION = 1
FLOW_PREFIX = "flow."  # converted names of the GMFlow weights in a released checkpoint

# (pattern, replacement) applied in order to each upstream key; first match wins.
_UPSTREAM_RENAMES: tuple[tuple[str, str], ...] = (
    (r"^encoder\.", "lq_encoder."),
    (r"^hq_encoder\.", "hq_encoder."),
    (r"^generator\.", "decoder."),
    (r"^quantize\.", "quantizer."),
    (r"^position_emb$", "transformer.position_emb"),
    (r"^feat_emb\.", "transformer.feat_emb."),
    (r"^ft_layers\.", "transformer.layers."),
    (r"^idx_pred_layer\.", "transformer.head."),
    (r"^(fuse_convs_dict|cft)\.", "cft."),
    (r"^(cross_fuse|cfa)\.", "cfa."),
    (r"^kalman_filter\.uncertainty_estimator\.", "kalman.uncertainty_blocks."),
    (r"^kalman_filter\.kalman_gain_calculator\.", "kalman.gain_head."),
    (r"^flownet\.model\.", FLOW_PREFIX),  # GMFlow: its own names under `flow.`
)


def convert_upstream_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an upstream KEEP state dict (v0.1.0 or later) to this project's names.

    The GMFlow weights (`flownet.model.<name>`) become `flow.<name>` (split off by `split_flow_state`).
    Unknown keys raise `KeepError`.
    """
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in state.items():
        for pattern, repl in _UPSTREAM_RENAMES:
            new, n = re.subn(pattern, repl, key, count=1)
            if n:
                out[new] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise KeepError(f"not a KEEP checkpoint: {len(unknown)} unexpected keys, e.g. {unknown[:3]}")
    return out


def split_flow_state(
    state: Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
    """(network weights, GMFlow weights in `GMFlowNet` names or None) from a converted state dict."""
    network = {k: v for k, v in state.items() if not k.startswith(FLOW_PREFIX)}
    flow = {k.removeprefix(FLOW_PREFIX): v for k, v in state.items() if k.startswith(FLOW_PREFIX)}
    return network, flow or None


def infer_upstream_config(state: Mapping[str, torch.Tensor]) -> KEEPConfig:
    """The released configuration, with the CFT / CFA scales and sizes read from the converted keys."""
    cft = sorted({int(k.split(".")[1]) for k in state if k.startswith("cft.")})
    cfa = sorted({int(k.split(".")[1]) for k in state if k.startswith("cfa.")})
    layers = sorted({int(k.split(".")[2]) for k in state if k.startswith("transformer.layers.")})
    blocks = sorted({int(k.split(".")[2]) for k in state if k.startswith("kalman.uncertainty_blocks.")})
    codebook = state.get("quantizer.embedding.weight")
    base = PRESETS["released"]
    return KEEPConfig(
        **{
            **asdict(base),
            "cft_scales": tuple(cft),
            "cfa_scales": tuple(cfa),
            "transformer_layers": len(layers) or base.transformer_layers,
            "kalman_blocks": len(blocks) or base.kalman_blocks,
            "codebook_size": codebook.shape[0] if codebook is not None else base.codebook_size,
            "emb_dim": codebook.shape[1] if codebook is not None else base.emb_dim,
        }
    )


def config_from_dict(values: Mapping[str, Any]) -> KEEPConfig:
    """`KEEPConfig` from a plain dict (as stored in checkpoints); unknown keys are an error."""
    names = {f.name for f in fields(KEEPConfig)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise KeepError(f"checkpoint config has unknown keys {unknown}; known: {sorted(names)}")
    tuples = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return KEEPConfig(**tuples)


def save_checkpoint(
    path: str | os.PathLike,
    model: KEEP,
    *,
    ema: KEEP | None = None,
    flow_state: Mapping[str, torch.Tensor] | None = None,
    **extra: Any,
) -> None:
    """Write a self-describing checkpoint atomically (temporary file, then rename).

    flow_state: the GMFlow weights the model came with (`Checkpoint.flow_state` of the released
        checkpoint it was fine-tuned from), kept so that the saved model still brings its own flow.
    """
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "config": asdict(model.config),
        "state_dict": model.state_dict(),
        **extra,
    }
    if ema is not None:
        payload["ema"] = ema.state_dict()
    if flow_state is not None:
        payload["flow_state_dict"] = dict(flow_state)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


class Checkpoint(NamedTuple):
    """A checkpoint in this project's terms: the network's configuration and weights, and the GMFlow
    weights it carries (`keep.flow.gmflow.GMFlowNet` names; None when it has none)."""

    config: KEEPConfig
    state: dict[str, torch.Tensor]
    flow_state: dict[str, torch.Tensor] | None


def read_checkpoint(obj: Any, *, use_ema: bool = True) -> Checkpoint:
    """Normalise any supported checkpoint object (see the module docstring) to a `Checkpoint`."""
    if not isinstance(obj, Mapping):
        raise KeepError(f"not a KEEP checkpoint: expected a dict, got {type(obj).__name__}")
    if obj.get("format") == FORMAT:
        config = config_from_dict(obj["config"])
        state = obj["ema"] if use_ema and obj.get("ema") is not None else obj["state_dict"]
        flow_state = obj.get("flow_state_dict")
        return Checkpoint(config, dict(state), dict(flow_state) if flow_state else None)
    for wrapper in ("params_ema", "params", "state_dict"):
        if wrapper in obj and isinstance(obj[wrapper], Mapping):
            obj = obj[wrapper]
            break
    if not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise KeepError("not a KEEP checkpoint: no tensors found (expected a state dict or a keep checkpoint)")
    state, flow_state = split_flow_state(convert_upstream_state_dict(obj))
    if "kalman.gain_head.0.conv1.weight" not in state or "hq_encoder.blocks.0.weight" not in state:
        raise KeepError(
            "not a KEEP checkpoint: it has no Kalman filter / HQ encoder weights "
            "(a CodeFormer or VQGAN checkpoint cannot be loaded as KEEP)"
        )
    return Checkpoint(infer_upstream_config(state), state, flow_state)
