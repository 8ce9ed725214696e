"""Training data: degradations (pure, seeded) and datasets of aligned face clips."""

from .degradations import DegradationConfig, degrade_clip

__all__ = ["DegradationConfig", "degrade_clip"]
