"""Optical flow estimators, chosen by name (`build_flow`).

Every estimator is a callable `flow = estimator(target, source)`: frames `(N, 3, H, W)` in [-1, 1]
-> flow `(N, 2, H, W)` in pixels (channel 0 = x, 1 = y) from `target` to `source`, i.e. `source`
sampled at `p + flow(p)` looks like `target`. KEEP asks for target = frame t, source = frame t-1.

- `gmflow`: GMFlow, the flow network the released KEEP was trained and evaluated with; its weights
  come with the released checkpoints (`keep.load_model(..., flow="gmflow")` passes them here).
- `raft_large`, `raft_small`: torchvision's RAFT; weights from a local file, `weights/`, the caches or
  torchvision's download (`keep.weights`), with a clear message when none is possible.
- `dis`: OpenCV's dense inverse search; classical, no weights, runs anywhere.
- `auto`: the checkpoint's own GMFlow when it has one, else `raft_large` when its weights are already
  on disk, else `dis`; it never downloads, and says once which it chose and why.

`clip_flows(estimator, clip)` is how training and inference both ask for the flows of a clip, so that
they follow one precision rule: flows are estimated in exact float32, whatever the network runs at.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import torch
from einops import rearrange

from ..checkpoint import read_checkpoint, read_checkpoint_file
from ..errors import KeepError, WeightsUnavailable
from ..precision import autocast
from ..weights import REGISTRY, resolve_weights
from .dis import DISFlow
from .gmflow import GMFlow, GMFlowNet
from .raft import RAFTFlow

log = logging.getLogger(__name__)

FlowEstimator = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

FLOW_ESTIMATORS: dict[str, Callable[..., FlowEstimator]] = {
    "gmflow": lambda *, device, weights, gmflow_state: GMFlow(_gmflow_state(weights, gmflow_state), device=device),
    "raft_large": lambda *, device, weights, gmflow_state: RAFTFlow("raft_large", device=device, weights=weights),
    "raft_small": lambda *, device, weights, gmflow_state: RAFTFlow("raft_small", device=device, weights=weights),
    "dis": lambda *, device, weights, gmflow_state: DISFlow(),
}


def _gmflow_state(weights: str | None, state: Mapping[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
    """GMFlow weights: given (from a KEEP checkpoint), or a file (a KEEP checkpoint or GMFlow's own)."""
    if state is not None:
        return dict(state)
    if weights is None:
        raise KeepError(
            "flow 'gmflow' needs GMFlow weights, and this model has none: only the released KEEP checkpoints "
            "(keep, keep_asian, keep_v0.1.0) and models fine-tuned from them carry GMFlow; "
            "choose --flow auto, raft_large, raft_small or dis"
        )

    obj = read_checkpoint_file(resolve_weights(weights), "GMFlow weights")  # .pth or .safetensors
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):  # GMFlow's own checkpoints
        return dict(obj["model"])
    flow_state = read_checkpoint(obj).flow_state
    if flow_state is None:
        raise KeepError(f"{weights} holds no GMFlow weights")
    return flow_state


def choose_auto(gmflow_state: Mapping[str, torch.Tensor] | None) -> tuple[str, str | None, str]:
    """The `auto` choice without downloading anything: (name, weights path or None, why)."""
    if gmflow_state is not None:
        return "gmflow", None, "the checkpoint's own GMFlow, as the released KEEP computes flow"
    try:
        path = resolve_weights("raft_large", download=False)
    except WeightsUnavailable:
        why = (
            f"the checkpoint has no GMFlow and RAFT's {REGISTRY['raft_large'].filename} is not on disk "
            "(auto never downloads; --flow raft_large would)"
        )
        return "dis", None, why
    return "raft_large", str(path), f"the checkpoint has no GMFlow; RAFT weights found at {path}"


def build_flow(
    name: str,
    *,
    device: str | torch.device = "cpu",
    weights: str | None = None,
    gmflow_state: Mapping[str, torch.Tensor] | None = None,
) -> FlowEstimator:
    """Flow estimator by name: one of `gmflow`, `raft_large`, `raft_small`, `dis`, `auto`.

    weights: a weight file for RAFT or GMFlow (default: the registry's for RAFT, which may download).
    gmflow_state: GMFlow weights in `GMFlowNet` names, as a released KEEP checkpoint carries them
        (`keep.checkpoint.read_checkpoint(...).flow_state`); `gmflow` and `auto` use them.
    """
    if name == "auto":
        name, path, why = choose_auto(gmflow_state)
        log.info("flow: %s (%s)", name, why)
        weights = path if name == "raft_large" else weights
    if name not in FLOW_ESTIMATORS:
        raise KeepError(f"unknown flow estimator '{name}'; choose one of: auto, {', '.join(FLOW_ESTIMATORS)}")
    return FLOW_ESTIMATORS[name](device=device, weights=weights, gmflow_state=gmflow_state)


@torch.no_grad()
def clip_flows(flow: FlowEstimator, clip: torch.Tensor, previous: torch.Tensor | None = None) -> torch.Tensor:
    """Flows frame t -> t-1 of clips, all pairs in one estimator call, in exact float32.

    clip: `(B, T, 3, H, W)` in [-1, 1]; previous: `(B, 3, H, W)` the frame before the clip, or None.
    Returns `(B, T', 2, H, W)` float32 pixels, T' = T when `previous` is given (entry 0: frame 0 -> previous),
    else T - 1.

    The precision rule of flow, for training and inference alike: no autocast and no TF32 around the
    estimator, whatever precision the network runs at. Under bf16 autocast the released GMFlow's flows
    moved enough to change a quarter of the golden codes, and TF32 moved them by up to 56 px on an H100
    (docs/speed.md); a model trained on other flows than it is run with would learn the wrong warps.
    """
    targets = clip if previous is not None else clip[:, 1:]
    sources = clip[:, :-1] if previous is None else torch.cat([previous[:, None], clip[:, :-1]], dim=1)
    flat = lambda x: rearrange(x, "b t c h w -> (b t) c h w")  # noqa: E731
    with autocast(clip.device, "fp32"):
        flows = flow(flat(targets), flat(sources)).float()
    return rearrange(flows, "(b t) c h w -> b t c h w", b=clip.shape[0])


__all__ = [
    "build_flow",
    "clip_flows",
    "choose_auto",
    "FLOW_ESTIMATORS",
    "FlowEstimator",
    "DISFlow",
    "GMFlow",
    "GMFlowNet",
    "RAFTFlow",
]
