"""What one training step computes in each stage (KEEP_SPEC section 9). Pure forward passes that
return the generator loss terms; the trainer owns optimizers, the discriminator and bookkeeping.

- `vqgan` (I): HQ encoder -> quantizer -> decoder reconstructs GT frames (L1, LPIPS, codebook).
- `transformer` (II): LQ encoder + code transformer (+ CFT) on single degraded frames: latent MSE
  against the GT quantized latents of the frozen HQ encoder + codebook, code CE against the GT codes.
- `temporal` (III): `model.run` on clips with flows from the GT frames: code CE, latent MSE of the
  posterior, L1 / LPIPS, flow-warped temporal loss on decoder features (trains Kalman gain + CFA).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from einops import rearrange

from ..archs.keep_arch import KEEP
from ..losses import code_cross_entropy, l1_loss, latent_mse, temporal_feature_loss
from .config import LossSection


@dataclass
class StepOutput:
    terms: dict[str, torch.Tensor]  # weighted generator loss terms, summed by the trainer
    rec: torch.Tensor  # reconstruction part (for the adaptive GAN weight)
    fake: torch.Tensor  # what the discriminator judges: (N, 3, H, W) or (B, 3, T, H, W)
    real: torch.Tensor


@dataclass
class Tools:
    """Loss modules and helpers a step may need (None when switched off)."""

    perceptual: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    flow_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None


def _flat(x: torch.Tensor) -> torch.Tensor:
    return rearrange(x, "b t c h w -> (b t) c h w")


def _image_terms(out: torch.Tensor, gt: torch.Tensor, w: LossSection, tools: Tools) -> dict[str, torch.Tensor]:
    terms = {}
    if w.l1 > 0:
        terms["l1"] = w.l1 * l1_loss(out, gt)
    if w.perceptual > 0:
        terms["perceptual"] = w.perceptual * tools.perceptual(out, gt)
    return terms


@torch.no_grad()
def gt_codes(model: KEEP, gt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Frozen VQGAN targets: gt `(N, 3, H, W)` -> (quantized latents `(N, C, h, w)`, codes `(N, h*w)`)."""
    z, _ = model.hq_encoder(gt)
    z_q, idx, _ = model.quantizer(z)
    return z_q, idx


def vqgan_step(model: KEEP, batch: dict[str, torch.Tensor], w: LossSection, tools: Tools) -> StepOutput:
    gt = _flat(batch["gt"])  # (N, 3, H, W)
    z, _ = model.hq_encoder(gt)
    z_q, _, codebook_loss = model.quantizer(z)
    out = model.decoder(z_q)
    terms = _image_terms(out, gt, w, tools)
    rec = sum(terms.values())
    if w.codebook > 0:
        terms["codebook"] = w.codebook * codebook_loss
    return StepOutput(terms, rec, out, gt)


def transformer_step(model: KEEP, batch: dict[str, torch.Tensor], w: LossSection, tools: Tools) -> StepOutput:
    gt = _flat(batch["gt"])
    lq = _flat(batch["lq"])[:, None]  # single frames as one-frame clips (B*T, 1, 3, H, W)
    z_q_gt, idx_gt = gt_codes(model, gt)
    res = model.run(lq)
    terms: dict[str, torch.Tensor] = {}
    if w.latent_mse > 0:
        terms["latent_mse"] = w.latent_mse * latent_mse(res.z_obs[:, 0], z_q_gt)
    if w.code_ce > 0:
        terms["code_ce"] = w.code_ce * code_cross_entropy(res.logits[:, 0], idx_gt)
    out = res.out[:, 0]
    image = _image_terms(out, gt, w, tools)  # only trains something when the CFT trains
    terms.update(image)
    return StepOutput(terms, sum(image.values()) if image else out.sum() * 0, out, gt)


def temporal_step(model: KEEP, batch: dict[str, torch.Tensor], w: LossSection, tools: Tools) -> StepOutput:
    gt, lq = batch["gt"], batch["lq"]  # (B, T, 3, H, W)
    batch_size = gt.shape[0]
    with torch.no_grad():  # flows frame t -> t-1 on the clean frames (issue #4)
        flows = tools.flow_fn(_flat(gt[:, 1:]), _flat(gt[:, :-1])).float()
        flows = rearrange(flows, "(b t) c h w -> b t c h w", b=batch_size)
    z_q_gt, idx_gt = gt_codes(model, _flat(gt))
    res = model.run(lq, flows, keep_features=w.temporal > 0)
    terms: dict[str, torch.Tensor] = {}
    if w.code_ce > 0:
        terms["code_ce"] = w.code_ce * code_cross_entropy(res.logits, idx_gt)  # (B, T, hw, K) vs (B*T, hw)
    if w.latent_mse > 0:
        terms["latent_mse"] = w.latent_mse * latent_mse(_flat(res.z_post), z_q_gt)
    image = _image_terms(_flat(res.out), _flat(gt), w, tools)
    terms.update(image)
    if w.temporal > 0:
        terms["temporal"] = w.temporal * temporal_feature_loss(res.features[w.temporal_scale], flows)
    fake = rearrange(res.out, "b t c h w -> b c t h w")
    real = rearrange(gt, "b t c h w -> b c t h w")
    return StepOutput(terms, sum(image.values()) if image else fake.sum() * 0, fake, real)


STAGE_STEPS: dict[str, Callable[..., StepOutput]] = {
    "vqgan": vqgan_step,
    "transformer": transformer_step,
    "temporal": temporal_step,
}
