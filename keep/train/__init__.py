"""Trainer of the three KEEP stages (one trainer, three configurations): see `trainer.py`."""

from .config import STAGES, TrainConfig
from .trainer import Trainer, build_model

__all__ = ["STAGES", "TrainConfig", "Trainer", "build_model"]
