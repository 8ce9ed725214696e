"""Training losses: pure functions over tensors plus the modules that own weights (LPIPS, discriminators)."""

from .basic import code_cross_entropy, l1_loss, latent_mse, temporal_feature_loss
from .gan import (
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
    "DISCRIMINATORS",
    "GAN_LOSSES",
    "LPIPSLoss",
    "PatchDiscriminator2D",
    "PatchDiscriminator3D",
    "adaptive_weight",
    "build_discriminator",
    "code_cross_entropy",
    "gan_losses",
    "l1_loss",
    "latent_mse",
    "temporal_feature_loss",
]
