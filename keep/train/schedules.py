"""Learning-rate schedules as pure functions of the step (multipliers of the base rate)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from ..errors import KeepError


def constant(step: int, total: int, milestones: Sequence[int], gamma: float) -> float:
    return 1.0


def cosine(step: int, total: int, milestones: Sequence[int], gamma: float) -> float:
    return 0.5 * (1 + math.cos(math.pi * min(step / max(total, 1), 1.0)))


def step_decay(step: int, total: int, milestones: Sequence[int], gamma: float) -> float:
    """x0.5 at 50% and again at 75% of training."""
    return 0.5 ** sum(step >= total * f for f in (0.5, 0.75))


def multistep(step: int, total: int, milestones: Sequence[int], gamma: float) -> float:
    """x gamma at every milestone passed (BasicSR's MultiStepLR: the released stage II halves at 200k, 400k)."""
    return gamma ** sum(step >= m for m in milestones)


SCHEDULES: dict[str, Callable[[int, int, Sequence[int], float], float]] = {
    "constant": constant,
    "cosine": cosine,
    "step": step_decay,
    "multistep": multistep,
}


def lr_at(
    step: int,
    *,
    base: float,
    total: int,
    schedule: str,
    warmup: int = 0,
    milestones: Sequence[int] = (),
    gamma: float = 0.5,
) -> float:
    """Learning rate of the (0-based) step: base x warmup ramp x schedule multiplier."""
    if schedule not in SCHEDULES:
        raise KeepError(f"unknown schedule '{schedule}'; choose one of {list(SCHEDULES)}")
    scale = min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0
    return base * scale * SCHEDULES[schedule](step, total, milestones, gamma)
