"""Pixel, latent, code and temporal losses: pure functions over tensors."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange

from ..archs.flow_warp import flow_warp
from ..errors import KeepError


def l1_loss(out: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Mean absolute error between images of any matching shape."""
    return F.l1_loss(out, gt)


def charbonnier_loss(out: torch.Tensor, gt: torch.Tensor, *, eps: float = 1e-12) -> torch.Tensor:
    """Mean of sqrt((out - gt)^2 + eps): a smooth L1 (the released stage III temporal loss)."""
    return torch.sqrt((out - gt).pow(2) + eps).mean()


PENALTIES = {"l1": l1_loss, "charbonnier": charbonnier_loss}


def latent_mse(z: torch.Tensor, z_target: torch.Tensor) -> torch.Tensor:
    """Feature MSE between predicted latents and the (detached) GT quantized latents (CodeFormer stage II)."""
    return F.mse_loss(z, z_target.detach())


def code_cross_entropy(logits: torch.Tensor, idx_target: torch.Tensor) -> torch.Tensor:
    """logits `(..., K)`, idx_target `(...)` codes the frozen VQGAN gives the GT -> mean CE."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), idx_target.reshape(-1))


def temporal_feature_loss(features: torch.Tensor, flows: torch.Tensor, *, penalty: str = "l1") -> torch.Tensor:
    """Flow-warped temporal consistency of decoder features (stage III, docs/training.md).

    features: `(B, T, C, r, r)` decoder features of consecutive frames; flows: `(B, T-1, 2, H, W)` in
    pixels, frame t -> t-1 at image size H (the released recipe: flows of the GT clip). Feature t-1
    warped to frame t should equal feature t: penalty(f_t, warp(f_{t-1}, flow_t)) averaged, with the flow
    resized (and rescaled) to r x r. penalty: `l1` or `charbonnier` (`PENALTIES`).
    """
    if penalty not in PENALTIES:
        raise KeepError(f"unknown temporal penalty '{penalty}'; choose one of {list(PENALTIES)}")
    frames = features.shape[1]
    if frames < 2:
        return features.new_zeros(())
    size = features.shape[-1]
    flow = rearrange(flows, "b t c h w -> (b t) c h w")
    flow = F.interpolate(flow, size=(size, size), mode="bilinear", align_corners=False) * (size / flows.shape[-1])
    previous = rearrange(features[:, :-1], "b t c h w -> (b t) c h w")
    current = rearrange(features[:, 1:], "b t c h w -> (b t) c h w")
    return PENALTIES[penalty](current, flow_warp(previous, flow.to(previous.dtype)))
