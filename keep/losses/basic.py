"""Pixel, latent, code and temporal losses: pure functions over tensors."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange

from ..archs.flow_warp import flow_warp


def l1_loss(out: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Mean absolute error between images of any matching shape."""
    return F.l1_loss(out, gt)


def latent_mse(z: torch.Tensor, z_target: torch.Tensor) -> torch.Tensor:
    """Feature MSE between predicted latents and the (detached) GT quantized latents (CodeFormer stage II)."""
    return F.mse_loss(z, z_target.detach())


def code_cross_entropy(logits: torch.Tensor, idx_target: torch.Tensor) -> torch.Tensor:
    """logits `(..., K)`, idx_target `(...)` codes the frozen VQGAN gives the GT -> mean CE."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), idx_target.reshape(-1))


def temporal_feature_loss(features: torch.Tensor, flows: torch.Tensor) -> torch.Tensor:
    """Flow-warped temporal consistency of decoder features (KEEP_SPEC section 9).

    features: `(B, T, C, r, r)` decoder features of consecutive frames; flows: `(B, T-1, 2, H, W)` in
    pixels, frame t -> t-1 at image size H. Feature t-1 warped to frame t should equal feature t:
    mean |f_t - warp(f_{t-1}, flow_t)|, with the flow resized (and rescaled) to r x r.
    """
    batch, frames = features.shape[:2]
    if frames < 2:
        return features.new_zeros(())
    size = features.shape[-1]
    flow = rearrange(flows, "b t c h w -> (b t) c h w")
    flow = F.interpolate(flow, size=(size, size), mode="bilinear", align_corners=False) * (size / flows.shape[-1])
    previous = rearrange(features[:, :-1], "b t c h w -> (b t) c h w")
    current = rearrange(features[:, 1:], "b t c h w -> (b t) c h w")
    return F.l1_loss(current, flow_warp(previous, flow.to(previous.dtype)))
