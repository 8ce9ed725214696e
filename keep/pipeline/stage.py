"""The one interface of the pipeline's stages, and a chain of them in one thread.

    stage = spec.build()                  # once per worker: its models loaded (the spec holds only its settings)
    stage.start(job, slots)               # per input: the frame pool, the slot functions, what to write
    outputs = stage.push(item)            # items in, the outputs ready after this one out (in order)
    outputs = stage.finish()              # the outputs still held at the end of the input
    stage.stats()                         # what it counted for the input (merged into the run's summary)

decode -> faces -> restore -> compose -> encode are stages; the decode stage is the source: its `frames()`
feed it the reader's frames. A stage may hold items (the tracker's look-ahead, a window of faces) and says
how many frame slots at most (`held`), which sizes the frame pool. `keep.pipeline.runner` runs groups of
stages (`Chain`) in worker processes, threads or one after another, joined by bounded queues.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from .items import Job, StageError, StageTimer


class Slots(Protocol):
    """The frame pool's free slots: the decoder takes one per frame (waiting while all are in use: the
    pipeline's back-pressure), the paste gives it back once the frame is composed."""

    def acquire(self) -> int: ...

    def release(self, slot: int) -> None: ...


class Stage:
    """Base of every stage (see the module docstring); `timer` counts the seconds inside its calls."""

    held = 0  # frame slots it may keep between calls

    def __init__(self):
        self.timer = StageTimer()

    def info(self) -> dict:
        """What was built (the detector's, mask's, flow's names), for the run's summary."""
        return {}

    def start(self, job: Job, slots: Slots) -> None:
        pass

    def push(self, item: Any) -> list:
        raise NotImplementedError

    def finish(self) -> list:
        return []

    def stats(self) -> dict:
        return {}

    def abort(self) -> None:
        """The input failed: release what it holds (an open writer)."""


class FreeSlots:
    """Slots for stages that run one after another in one thread: a free list (nobody waits for a slot)."""

    def __init__(self, count: int):
        self.free = deque(range(count))

    def acquire(self) -> int:
        if not self.free:
            raise StageError("no free frame slot (pool too small)")
        return self.free.popleft()

    def release(self, slot: int) -> None:
        self.free.append(slot)


class Progress(Stage):
    """Passes items on and counts them for the caller (the restored frames: `Pipeline.run`'s progress)."""

    def __init__(self, advance: Callable[[int], None]):
        super().__init__()
        self.advance = advance

    def push(self, item: Any) -> list:
        self.advance(1)
        return [item]


class Chain:
    """Stages run one after another in one thread. Each output is pushed into the next stage at once (depth
    first), so a chain holds no more than its stages do; `emit` receives the last stage's outputs, in order."""

    def __init__(self, stages: Iterable[Stage]):
        self.stages = list(stages)

    @property
    def held(self) -> int:
        return sum(stage.held for stage in self.stages)

    def info(self) -> dict:
        return {key: value for stage in self.stages for key, value in stage.info().items()}

    def frames(self) -> Iterator:
        """The source stage's input (the reader's frames)."""
        return self.stages[0].frames()

    def start(self, job: Job, slots: Slots) -> None:
        for stage in self.stages:
            stage.timer.seconds.clear()
            stage.start(job, slots)

    def push(self, item: Any, emit: Callable[[Any], None]) -> None:
        self._feed(0, item, emit)

    def finish(self, emit: Callable[[Any], None]) -> None:
        """Finish every stage in order, each one's last outputs passed through the stages after it."""
        for index, stage in enumerate(self.stages):
            for item in stage.finish():
                self._feed(index + 1, item, emit)

    def _feed(self, index: int, item: Any, emit: Callable[[Any], None]) -> None:
        if index == len(self.stages):
            emit(item)
            return
        for out in self.stages[index].push(item):
            self._feed(index + 1, out, emit)

    def stats(self) -> dict:
        """Every stage's counts and, under `timings`, their seconds."""
        stats = {key: value for stage in self.stages for key, value in stage.stats().items()}
        timings = {name: seconds for stage in self.stages for name, seconds in stage.timer.seconds.items()}
        return stats | {"timings": timings}

    def abort(self) -> None:
        for stage in self.stages:
            stage.abort()


def merge_stats(*parts: dict) -> dict:
    """Stats of several groups in one dict; their `timings` added up by name."""
    merged: dict = {"timings": {}}
    for part in parts:
        for key, value in part.items():
            if key == "timings":
                for name, seconds in value.items():
                    merged["timings"][name] = merged["timings"].get(name, 0.0) + seconds
            else:
                merged[key] = value
    return merged
