"""Checkpoints: the project's own self-describing format and the one converter for foreign layouts.

Layouts that load (`keep.load_model`), from a torch file (`.pth`, read without running code) or a
`.safetensors` file alike:
- ours: `{"format": "keep", "version": 1, "config": {...KEEPConfig}, "state_dict": {...}}` (+ optional
  `"ema"`, and `"flow_state_dict"`: the GMFlow weights a released model came with); written by
  `save_checkpoint` and by the trainer. As `.safetensors`: the tensors named `state_dict.<name>`,
  `ema.<name>`, `flow_state_dict.<name>`, and the rest as JSON in the file's metadata
  (`{"format": "keep", "keep": "{\"version\": 1, \"config\": ...}"}`).
  Checkpoints written before the fidelity became an argument of `KEEP.run` store it in
  their config as `cft_weight`: the key is dropped on loading (with a warning when it is not 1, the
  value of every release); pass the fidelity at run time instead (`keep.load_model(..., fidelity=...)`).
- released v0.1.0 (`KEEP-a1a14d46.pth`): a bare state dict with the authors' names
  (`encoder.`, `generator.`, `fuse_convs_dict.`, `cross_fuse.`, `kalman_filter.`, `flownet.`, ...);
- v1.0.0 (`KEEP-b76feb75.pth`, `KEEP_Asian-4765ebe0.pth`) and later: the same with `cft.` / `cfa.`
  names, stored under `params_ema` (or `params`).
- a bare state dict in this project's names (`torch.save(network.state_dict())`).

Every foreign name goes through `convert_upstream_state_dict`, and loading is strict. A bare state
dict does not say how its network was built: `infer_config` finds the preset whose sizes, read from the
weights (fusion scales, layers, codebook), fit every tensor's shape, or names the closest one. The
released checkpoints carry the GMFlow flow network (`flownet.model.<name>`): it becomes `flow.<name>`,
which `read_checkpoint` returns apart from the network's weights (`keep.flow.gmflow.GMFlowNet` names).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, NamedTuple

import torch
from safetensors.torch import save

from .archs.keep_arch import KEEP, PRESETS, KEEPConfig
from .config import from_dict
from .errors import KeepError
from .paths import write_atomically
from .weights import read_safetensors, read_tensors

log = logging.getLogger(__name__)

FORMAT = "keep"
VERSION = 1
FLOW_PREFIX = "flow."  # converted names of the GMFlow weights in a released checkpoint
GROUPS = ("state_dict", "ema", "flow_state_dict")  # the tensor groups of our format
PARTS = ("lq_encoder", "hq_encoder", "quantizer", "decoder", "transformer", "cft", "cfa", "kalman")  # KEEP's

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


def _read_sizes(base: KEEPConfig, state: Mapping[str, torch.Tensor]) -> KEEPConfig:
    """`base` with the sizes the weights show: CFT / CFA scales, transformer layers, Kalman blocks, codebook."""
    scales = lambda part: tuple(sorted({int(k.split(".")[1]) for k in state if k.startswith(part)}))  # noqa: E731
    layers = {int(k.split(".")[2]) for k in state if k.startswith("transformer.layers.")}
    blocks = {int(k.split(".")[2]) for k in state if k.startswith("kalman.uncertainty_blocks.")}
    codebook = state.get("quantizer.embedding.weight")
    return replace(
        base,
        cft_scales=scales("cft."),
        cfa_scales=scales("cfa."),
        transformer_layers=len(layers) or base.transformer_layers,
        kalman_blocks=len(blocks) or base.kalman_blocks,
        codebook_size=codebook.shape[0] if codebook is not None else base.codebook_size,
        emb_dim=codebook.shape[1] if codebook is not None else base.emb_dim,
    )


def _differences(config: KEEPConfig, state: Mapping[str, torch.Tensor]) -> list[str] | None:
    """How `state` differs from the weights of `KEEP(config)` (tensors of another shape, missing,
    unexpected), one phrase each; None when the configuration cannot be built at all."""
    try:
        with torch.device("meta"):  # shapes only: no memory, no random numbers drawn
            expected = {k: tuple(v.shape) for k, v in KEEP(config).state_dict().items()}
    except ValueError:  # fusion scales the decoder does not have
        return None
    found = {k: tuple(v.shape) for k, v in state.items()}
    differ = [
        f"{k} {found[k]} where the network has {expected[k]}" for k in found if found[k] != expected.get(k, found[k])
    ]
    return (
        differ
        + [f"{k} missing" for k in expected if k not in found]
        + [f"{k} unexpected" for k in found if k not in expected]
    )


def infer_config(state: Mapping[str, torch.Tensor]) -> KEEPConfig:
    """The configuration of a bare state dict (this project's names): the preset, with the sizes read
    from the weights, that fits every tensor's shape; KeepError naming the closest one otherwise."""
    candidates = {name: _read_sizes(base, state) for name, base in PRESETS.items()}
    differences = {name: _differences(config, state) for name, config in candidates.items()}
    for name, found in differences.items():
        if found == []:
            return candidates[name]
    built = [n for n in differences if differences[n] is not None]
    if not built:
        scales = next(iter(candidates.values()))
        raise KeepError(
            f"not a KEEP checkpoint: CFT scales {scales.cft_scales}, CFA {scales.cfa_scales} fit no decoder"
        )
    name = min(built, key=lambda n: len(differences[n]))
    config = candidates[name]
    changed = {k: v for k, v in asdict(config).items() if v != getattr(PRESETS[name], k)}
    raise KeepError(
        f"a bare state dict (weights without the configuration that built them) whose shapes fit no known "
        f"KEEP configuration; the closest is preset '{name}'{f' with {changed}' if changed else ''}, where "
        f"{len(differences[name])} of {len(state)} tensors differ (e.g. {differences[name][0]}). Save the network "
        "with keep.save_checkpoint(path, network), which stores its configuration beside the weights, "
        f"or train it from its configuration (train.py --set model.preset={name} model.config.<field>=...)"
    )


def _stored_config(values: Mapping[str, Any]) -> KEEPConfig:
    """`KEEPConfig` from a checkpoint's stored dict, typed and checked (`keep.config.from_dict`)."""
    values = dict(values)
    fidelity = values.pop("cft_weight", 1.0)  # stored before the fidelity became a run argument
    if fidelity != 1.0:
        log.warning(
            "the checkpoint's config stores a fidelity (cft_weight) of %s: the fidelity is now chosen when "
            "the model runs (keep.load_model(..., fidelity=%s), inference.py --fidelity %s); ignored here",
            fidelity, fidelity, fidelity,
        )  # fmt: skip
    return from_dict(KEEPConfig, values, prefix="config.")


def save_checkpoint(
    path: str | os.PathLike,
    model: KEEP,
    *,
    ema: KEEP | None = None,
    flow_state: Mapping[str, torch.Tensor] | None = None,
    **extra: Any,
) -> None:
    """Write a self-describing checkpoint whole or not at all (`keep.paths.write_atomically`: KeepError naming
    the file if it cannot be written); a path ending in `.safetensors` is written in that format (see the
    module docstring; `extra` must then be JSON).

    flow_state: the GMFlow weights the model came with (`Checkpoint.flow_state` of the released
        checkpoint it was fine-tuned from), kept so that the saved model still brings its own flow.
    """
    header = {"format": FORMAT, "version": VERSION, "config": asdict(model.config)}
    groups = {"state_dict": model.state_dict(), "ema": ema.state_dict() if ema is not None else None}
    groups["flow_state_dict"] = dict(flow_state) if flow_state is not None else None
    path = Path(path)
    if path.suffix == ".safetensors":
        write_atomically(path, _safetensors_bytes({k: v for k, v in header.items() if k != "format"} | extra, groups))
    else:
        payload = {**header, "state_dict": groups["state_dict"], **extra}
        payload |= {g: groups[g] for g in ("ema", "flow_state_dict") if groups[g] is not None}
        write_atomically(path, lambda f: torch.save(payload, f))


def _safetensors_bytes(header: dict[str, Any], groups: Mapping[str, Mapping | None]) -> bytes:
    """Our format as `.safetensors`: tensors `<group>.<name>`, the header as JSON in the metadata."""
    tensors, stored = {}, set()
    for group, values in groups.items():
        for key, value in (values or {}).items():
            value = value.detach().contiguous()
            if value.untyped_storage().data_ptr() in stored:  # the format refuses tensors that share memory
                value = value.clone()
            stored.add(value.untyped_storage().data_ptr())
            tensors[f"{group}.{key}"] = value
    return save(tensors, metadata={"format": FORMAT, FORMAT: json.dumps(header)})


def read_checkpoint_file(path: str | os.PathLike, what: str = "checkpoint") -> Any:
    """What a checkpoint file holds, read without running code: a torch file through
    `keep.weights.read_tensors`, a `.safetensors` file as its tensors (this project's own checkpoints
    rebuilt from the file's metadata into the layout `read_checkpoint` takes)."""
    if Path(path).suffix != ".safetensors":
        return read_tensors(path, what)
    tensors, metadata = read_safetensors(path, what)
    if metadata.get("format") != FORMAT:
        return tensors  # a bare state dict
    try:
        obj = {"format": FORMAT, **json.loads(metadata[FORMAT])}
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise KeepError(f"cannot read {what} {path}: its metadata is not a KEEP checkpoint's ({exc})") from None
    for key, value in tensors.items():
        group, name = key.split(".", 1) if "." in key else ("", key)
        if group not in GROUPS:
            raise KeepError(f"cannot read {what} {path}: unexpected tensor '{key}' in a KEEP checkpoint")
        obj.setdefault(group, {})[name] = value
    return obj


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
        config = _stored_config(obj["config"])
        state = obj["ema"] if use_ema and obj.get("ema") is not None else obj["state_dict"]
        flow_state = obj.get("flow_state_dict")
        return Checkpoint(config, dict(state), dict(flow_state) if flow_state else None)
    for wrapper in ("params_ema", "params", "state_dict"):
        if wrapper in obj and isinstance(obj[wrapper], Mapping):
            obj = obj[wrapper]
            break
    if not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise KeepError("not a KEEP checkpoint: no tensors found (expected a state dict or a keep checkpoint)")
    if {k.split(".")[0] for k in obj} <= set(PARTS):  # this project's names already
        state, flow_state = dict(obj), None
    else:
        state, flow_state = split_flow_state(convert_upstream_state_dict(obj))
    if "kalman.gain_head.0.conv1.weight" not in state or "hq_encoder.blocks.0.weight" not in state:
        raise KeepError(
            "not a KEEP checkpoint: it has no Kalman filter / HQ encoder weights "
            "(a CodeFormer or VQGAN checkpoint cannot be loaded as KEEP)"
        )
    return Checkpoint(infer_config(state), state, flow_state)
