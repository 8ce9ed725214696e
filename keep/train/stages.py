"""The training stages of the authors' released recipe (docs/training.md), each one `Stage` record.

A record says what trains, builds the stage's training forward, lists the losses it computes, restores a
validation clip and says whether it needs optical flow; the trainer never branches on a stage's name.
The training forward is an `nn.Module` holding the KEEP network, so that DistributedDataParallel wraps
it: gradients are bucketed and all-reduced while backward still runs (see docs/training.md).

- `vqgan` (I): HQ encoder -> quantizer -> decoder reconstructs GT frames: L1, LPIPS, codebook, GAN.
- `kalman` (II): LQ encoder + code transformer + Kalman filter on degraded clips, through the whole
  Kalman loop with flows of the LQ clip (what inference sees, so the gain learns how far to trust a
  prediction warped with imperfect flow). Losses: code CE against the codes the frozen VQGAN gives the
  GT; MSE between the LQ encoder latent and the GT's quantized latent (upstream's `lq_feat` vs
  `quant_feat_gt`); L1 / LPIPS through a straight-through code lookup (without it the pixel loss
  reaches no trained weight). Decoder, codebook, HQ encoder, CFT and CFA stay frozen: CFT and CFA are
  identities until trained (keep/archs/fusion.py), so the decoder is the plain VQGAN decoder.
- `cft_cfa` (III): only CFT and CFA train. Losses: L1, LPIPS, a Charbonnier temporal loss on decoder
  features at one scale warped with the flow of the GT clip, and a GAN on the clip (3-D discriminator).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from einops import rearrange
from torch import nn

from ..archs.keep_arch import KEEP
from ..flow import clip_flows  # flows in exact float32 under the trainer's autocast, as in inference
from ..losses import code_cross_entropy, l1_loss, latent_mse, temporal_feature_loss
from .config import LossSection

FlowFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Tools:
    """Frozen helpers a stage may call; kept out of the module tree so DDP neither syncs nor wraps them."""

    perceptual: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    flow: FlowFn | None = None


class StepOutput(NamedTuple):
    terms: dict[str, torch.Tensor]  # weighted generator loss terms, summed by the trainer
    rec: torch.Tensor  # reconstruction part (for the adaptive GAN weight)
    fake: torch.Tensor  # restored clip (B, T, 3, H, W), what the discriminator judges
    real: torch.Tensor  # GT clip (B, T, 3, H, W)


def _flat(x: torch.Tensor) -> torch.Tensor:
    return rearrange(x, "b t c h w -> (b t) c h w")


@torch.no_grad()
def gt_codes(network: KEEP, gt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Frozen VQGAN targets: gt `(N, 3, H, W)` -> (quantized latents `(N, C, h, w)`, codes `(N, h*w)`)."""
    z, _ = network.hq_encoder(gt)
    z_q, idx, _ = network.quantizer(z)
    return z_q, idx


def image_terms(out: torch.Tensor, gt: torch.Tensor, w: LossSection, tools: Tools) -> dict[str, torch.Tensor]:
    """Weighted L1 and LPIPS of frames `(N, 3, H, W)`."""
    terms = {}
    if w.l1 > 0:
        terms["l1"] = w.l1 * l1_loss(out, gt)
    if w.perceptual > 0:
        terms["perceptual"] = w.perceptual * tools.perceptual(out, gt)
    return terms


class VQGANForward(nn.Module):
    """Stage I: batch {"gt": (B, T, 3, H, W)} -> StepOutput (frames as one-frame clips)."""

    def __init__(self, network: KEEP, *, losses: LossSection, tools: Tools):
        super().__init__()
        self.network, self.losses, self.tools = network, losses, tools

    def forward(self, batch: dict[str, torch.Tensor]) -> StepOutput:
        net, w = self.network, self.losses
        gt = _flat(batch["gt"])  # (N, 3, H, W)
        z, _ = net.hq_encoder(gt)
        z_q, _, codebook_loss = net.quantizer(z)
        out = net.decoder(z_q)
        terms = image_terms(out, gt, w, self.tools)
        rec = sum(terms.values())
        if w.codebook > 0:
            terms["codebook"] = w.codebook * codebook_loss
        return StepOutput(terms, rec, out[:, None], gt[:, None])


class ClipForward(nn.Module):
    """Stages II and III: batch {"gt", "lq": (B, T, 3, H, W)} -> StepOutput, the clip through the Kalman
    loop (`KEEP.run`) with flows of the LQ clip; losses switched on by their weights."""

    def __init__(self, network: KEEP, *, losses: LossSection, tools: Tools, straight_through: bool):
        super().__init__()
        self.network, self.losses, self.tools = network, losses, tools
        self.straight_through = straight_through

    def forward(self, batch: dict[str, torch.Tensor]) -> StepOutput:
        net, w = self.network, self.losses
        gt, lq = batch["gt"], batch["lq"]
        res = net.run(
            lq, clip_flows(self.tools.flow, lq), keep_features=w.temporal > 0, straight_through=self.straight_through
        )
        terms: dict[str, torch.Tensor] = {}
        if w.code_ce > 0 or w.latent_mse > 0:
            z_q_gt, idx_gt = gt_codes(net, _flat(gt))
            if w.code_ce > 0:
                terms["code_ce"] = w.code_ce * code_cross_entropy(res.logits, idx_gt)  # (B, T, hw, K) vs (B*T, hw)
            if w.latent_mse > 0:
                terms["latent_mse"] = w.latent_mse * latent_mse(_flat(res.z_obs), z_q_gt)
        image = image_terms(_flat(res.out), _flat(gt), w, self.tools)
        terms.update(image)
        if w.temporal > 0:  # warped with the GT clip's flow (the released recipe)
            features = res.features[w.temporal_scale]
            loss = temporal_feature_loss(features, clip_flows(self.tools.flow, gt), penalty=w.temporal_penalty)
            terms["temporal"] = w.temporal * loss
        rec = sum(image.values()) if image else res.out.sum() * 0
        return StepOutput(terms, rec, res.out, gt)


# ------------------------------------------------------------------------------------------ validation
@torch.no_grad()
def restore_vqgan(network: KEEP, item: dict[str, torch.Tensor], w: LossSection, tools: Tools):
    """Validation of stage I: GT frames `(T, 3, H, W)` -> their reconstruction, no extra metric."""
    z, _ = network.hq_encoder(item["gt"])
    return network.decoder(network.quantizer(z)[0]), {}


@torch.no_grad()
def restore_clip(network: KEEP, item: dict[str, torch.Tensor], w: LossSection, tools: Tools):
    """Validation of clip stages: LQ clip `(T, 3, H, W)` restored as at inference (LQ flows) ->
    (restored frames, {"temporal": the unweighted temporal loss with the GT clip's flow})."""
    lq, gt = item["lq"][None], item["gt"][None]
    res = network.run(lq, clip_flows(tools.flow, lq), keep_features=True)
    scale = w.temporal_scale if w.temporal_scale in res.features else max(res.features, default=None)
    extra = {}
    if scale is not None and lq.shape[1] > 1:
        loss = temporal_feature_loss(res.features[scale], clip_flows(tools.flow, gt), penalty=w.temporal_penalty)
        extra["temporal"] = float(loss)
    return res.out[0], extra


# ------------------------------------------------------------------------------------------ records
@dataclass(frozen=True)
class Stage:
    name: str
    trainable: tuple[str, ...]  # top-level KEEP submodules trained (train.trainable overrides)
    forward: Callable[..., nn.Module]  # (network, losses=, tools=) -> training forward module
    restore: Callable[..., tuple[torch.Tensor, dict[str, float]]]  # validation of one held-out item
    losses: tuple[str, ...]  # LossSection weights it computes; any other weight must be 0
    needs_flow: bool  # builds train.flow
    min_frames: int  # shortest clip (data.clip_length) it can learn from


STAGES: dict[str, Stage] = {
    "vqgan": Stage(
        name="vqgan",
        trainable=("hq_encoder", "quantizer", "decoder"),
        forward=VQGANForward,
        restore=restore_vqgan,
        losses=("l1", "perceptual", "codebook", "gan"),
        needs_flow=False,
        min_frames=1,
    ),
    "kalman": Stage(
        name="kalman",
        trainable=("lq_encoder", "transformer", "kalman"),
        forward=lambda network, **kw: ClipForward(network, straight_through=True, **kw),
        restore=restore_clip,
        losses=("code_ce", "latent_mse", "l1", "perceptual", "gan"),
        needs_flow=True,
        min_frames=2,
    ),
    "cft_cfa": Stage(
        name="cft_cfa",
        trainable=("cft", "cfa"),
        forward=lambda network, **kw: ClipForward(network, straight_through=False, **kw),
        restore=restore_clip,
        losses=("l1", "perceptual", "temporal", "gan"),
        needs_flow=True,
        min_frames=2,
    ),
}

LOSS_WEIGHTS = ("l1", "perceptual", "gan", "codebook", "latent_mse", "code_ce", "temporal")
