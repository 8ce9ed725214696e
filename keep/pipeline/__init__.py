"""Restore every face in videos, streaming, with the stages overlapped (issues #3, #11, 20).

    decode -> faces (detect, track) -> restore (align, KEEP, all tracks batched) -> compose (paste) -> encode

One small module per stage (`decode`, `faces`, `restore`, `compose`, `encode`), all with one interface
(`stage.Stage`: push an item, get the outputs ready); `runner` runs groups of them in worker processes,
threads or inline, joined by bounded queues (the grouping is `options.STAGE_GROUPS`, chosen by the device);
`pipeline.Pipeline` runs one input; `batch` runs a folder of them, skipping finished ones and sharding over
`torchrun` processes, or (`ray_engine`, `--set engine=ray`) handing them video by video to Ray workers.
"""

from .batch import prepare_process, restore_inputs
from .inputs import Input, collect_inputs, outputs_of
from .items import StageError
from .options import OVERLAP_MODES, STAGE_GROUPS, STAGE_TIMERS, STAGES, PipelineOptions
from .pipeline import Pipeline

__all__ = [
    "OVERLAP_MODES",
    "STAGES",
    "STAGE_GROUPS",
    "STAGE_TIMERS",
    "Input",
    "Pipeline",
    "PipelineOptions",
    "StageError",
    "collect_inputs",
    "outputs_of",
    "prepare_process",
    "restore_inputs",
]
