"""The training configuration: one dataclass tree, read by `keep.config.load_config` (unknown keys error).

Sections: `model` (what network, from where), `data` / `val` (`keep.data.DataConfig`, degradation ranges
included), `train` (optimisation, schedule, which stage), `loss` (weights; 0 switches a loss off), `log`
(intervals). A stage (`train.stage`, `keep.train.stages.STAGES`) says what trains, its forward, which
losses it computes and how it validates; `train.trainable` overrides its list of trained submodules.

Every number's allowed range is its annotation (`keep.config.Range`), checked when a section is built:
a value outside is a usage error before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

from ..config import (
    FolderName,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Range,
    check_fields,
)
from ..data.datasets import DataConfig

Decay = Annotated[float, Range(0, 1, high_open=True)]  # Adam's betas, the EMA decay: 1 would never move
Seed = Annotated[int, Range(0, 2**32 - 1)]  # numpy's generators refuse negative seeds; 32 bits as is usual


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
    total_steps: PositiveInt = 100
    lr: PositiveFloat = 2e-4
    betas: tuple[Decay, Decay] = (0.9, 0.99)
    weight_decay: NonNegativeFloat = 0.0
    schedule: str = "constant"  # keep.train.schedules.SCHEDULES
    milestones: tuple[PositiveInt, ...] = ()  # schedule "multistep": steps where the rate is multiplied by gamma
    gamma: PositiveFloat = 0.5
    warmup_steps: NonNegativeInt = 0
    grad_clip: NonNegativeFloat = 0.0  # max gradient norm, 0 = off
    ema_decay: Decay = 0.0  # 0 = no EMA
    precision: str = "fp32"  # fp32 | tf32 | bf16 | fp16 (fp16 uses a gradient scaler)
    seed: Seed = 0
    deterministic: bool = False  # bit-identical reruns and resumes (fixed CPU threads; see docs/training.md)
    device: str = "auto"  # auto | cpu | cuda | cuda:N (keep.devices.resolve_device)
    flow: str = "dis"  # keep.flow estimator for clip stages (Kalman prediction on LQ, temporal loss on GT)
    disc: str = "patch2d"  # keep.losses.DISCRIMINATORS
    disc_nf: PositiveInt = 64
    disc_layers: PositiveInt = 3
    disc_lr: PositiveFloat = 2e-4
    disc_start: NonNegativeInt = 0  # GAN losses on from this step (0-based: 30 = from iteration 31)

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass
class LossSection:
    """Loss weights: 0 switches a loss off."""

    l1: NonNegativeFloat = 1.0
    perceptual: NonNegativeFloat = 0.0  # LPIPS; needs the backbone weights (keep.weights: vgg16 / alexnet)
    perceptual_net: str = "vgg"
    gan: NonNegativeFloat = 0.0
    gan_type: str = "hinge"  # keep.losses.GAN_LOSSES
    adaptive_gan_weight: bool = True  # stage I: scale the GAN term by the adaptive weight
    codebook: NonNegativeFloat = 1.0  # stage I: VQ codebook + commitment loss
    latent_mse: NonNegativeFloat = 0.0  # stage II: LQ encoder latent vs the GT's quantized latent (frozen VQGAN)
    code_ce: NonNegativeFloat = 0.0  # stage II: cross-entropy against the GT codes
    temporal: NonNegativeFloat = 0.0  # stage III: decoder features warped with the GT clip's flow
    temporal_scale: PositiveInt = 32  # decoder resolution of the temporal loss (a CFA scale)
    temporal_penalty: str = "charbonnier"  # keep.losses.PENALTIES

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass
class LogSection:
    every: PositiveInt = 10  # steps between log lines
    val_every: NonNegativeInt = 0  # 0 = only at the end
    val_at_start: bool = True  # validate the initial weights (the baseline a run improves on)
    save_every: NonNegativeInt = 0  # 0 = only at the end
    val_items: PositiveInt = 4
    tensorboard: bool = True

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass
class TrainConfig:
    name: FolderName = "debug"  # a folder name, never a path (`name=../..` would write outside root)
    root: str = "experiments"  # runs go to <root>/<name>/
    model: ModelSection = field(default_factory=ModelSection)
    data: DataConfig = field(default_factory=DataConfig)
    val: DataConfig | None = None  # held-out data for PSNR / SSIM, None = no validation
    train: TrainSection = field(default_factory=TrainSection)
    loss: LossSection = field(default_factory=LossSection)
    log: LogSection = field(default_factory=LogSection)

    def __post_init__(self) -> None:
        check_fields(self)
