"""Trainer of the KEEP stages (one trainer, one record per stage): see `trainer.py` and `stages.py`."""

from .config import TrainConfig
from .stages import STAGES, Stage
from .trainer import Trainer, build_model

__all__ = ["STAGES", "Stage", "TrainConfig", "Trainer", "build_model"]
