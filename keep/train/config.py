"""The training configuration: one dataclass tree, read by `keep.config.load_config` (unknown keys error).

Sections: `model` (what network, from where), `data` / `val` (`keep.data.DataConfig`, degradation ranges
included), `train` (optimisation, schedule, which stage), `loss` (weights; 0 switches a loss off), `log`
(intervals). A stage (`train.stage`, `keep.train.stages.STAGES`) says what trains, its forward, which
losses it computes and how it validates; `train.trainable` overrides its list of trained submodules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..data.datasets import DataConfig


@dataclass
class ModelSection:
    preset: str = "tiny"  # base KEEPConfig from keep.archs.PRESETS
    config: dict[str, Any] = field(default_factory=dict)  # KEEPConfig fields overriding the preset
    pretrained: str | None = None  # checkpoint path / registry name, read with weights_only=True
    init_lq_from_hq: bool = False  # start the LQ encoder from the (stage I) HQ encoder


@dataclass
class TrainSection:
    stage: str = "vqgan"  # a name of keep.train.stages.STAGES
    trainable: tuple[str, ...] | None = None  # top-level submodules; None = the stage's own list
    total_steps: int = 100
    lr: float = 2e-4
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.0
    schedule: str = "constant"  # keep.train.schedules.SCHEDULES
    milestones: tuple[int, ...] = ()  # schedule "multistep": steps where the rate is multiplied by gamma
    gamma: float = 0.5
    warmup_steps: int = 0
    grad_clip: float = 0.0  # max gradient norm, 0 = off
    ema_decay: float = 0.0  # 0 = no EMA
    precision: str = "fp32"  # fp32 | tf32 | bf16 | fp16 (fp16 uses a gradient scaler)
    seed: int = 0
    deterministic: bool = False  # bit-identical reruns and resumes (fixed CPU threads; see docs/training.md)
    device: str = "auto"  # auto | cpu | cuda | cuda:N (keep.cli.resolve_device)
    flow: str = "dis"  # keep.flow estimator for clip stages (Kalman prediction on LQ, temporal loss on GT)
    disc: str = "patch2d"  # keep.losses.DISCRIMINATORS
    disc_nf: int = 64
    disc_layers: int = 3
    disc_lr: float = 2e-4
    disc_start: int = 0  # GAN losses on from this step (0-based: 30 = from iteration 31)


@dataclass
class LossSection:
    l1: float = 1.0
    perceptual: float = 0.0  # LPIPS; needs the backbone weights (keep.weights: vgg16 / alexnet)
    perceptual_net: str = "vgg"
    gan: float = 0.0
    gan_type: str = "hinge"  # keep.losses.GAN_LOSSES
    adaptive_gan_weight: bool = True  # stage I: scale the GAN term by the adaptive weight
    codebook: float = 1.0  # stage I: VQ codebook + commitment loss
    latent_mse: float = 0.0  # stage II: LQ encoder latent vs the GT's quantized latent (frozen VQGAN)
    code_ce: float = 0.0  # stage II: cross-entropy against the GT codes
    temporal: float = 0.0  # stage III: decoder features warped with the GT clip's flow
    temporal_scale: int = 32  # decoder resolution of the temporal loss (a CFA scale)
    temporal_penalty: str = "charbonnier"  # keep.losses.PENALTIES


@dataclass
class LogSection:
    every: int = 10  # steps between log lines
    val_every: int = 0  # 0 = only at the end
    val_at_start: bool = True  # validate the initial weights (the baseline a run improves on)
    save_every: int = 0  # 0 = only at the end
    val_items: int = 4
    tensorboard: bool = True


@dataclass
class TrainConfig:
    name: str = "debug"
    root: str = "experiments"  # runs go to <root>/<name>/
    model: ModelSection = field(default_factory=ModelSection)
    data: DataConfig = field(default_factory=DataConfig)
    val: DataConfig | None = None  # held-out data for PSNR / SSIM, None = no validation
    train: TrainSection = field(default_factory=TrainSection)
    loss: LossSection = field(default_factory=LossSection)
    log: LogSection = field(default_factory=LogSection)
