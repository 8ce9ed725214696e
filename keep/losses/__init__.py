"""Training losses: pure functions over tensors plus the modules that own weights (LPIPS, discriminators)."""

from .basic import PENALTIES, charbonnier_loss, code_cross_entropy, l1_loss, latent_mse, temporal_feature_loss
from .gan import (
    CLIP_LAYOUT,
    DISCRIMINATORS,
    GAN_LOSSES,
    PatchDiscriminator2D,
    PatchDiscriminator3D,
    adaptive_weight,
    build_discriminator,
    gan_losses,
)
from .perceptual import LPIPSLoss

__all__ = [
    "CLIP_LAYOUT",
    "DISCRIMINATORS",
    "PENALTIES",
    "GAN_LOSSES",
    "LPIPSLoss",
    "PatchDiscriminator2D",
    "PatchDiscriminator3D",
    "adaptive_weight",
    "build_discriminator",
    "charbonnier_loss",
    "code_cross_entropy",
    "gan_losses",
    "l1_loss",
    "latent_mse",
    "temporal_feature_loss",
]
