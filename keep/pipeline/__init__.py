"""Restore every face in videos, streaming, with the stages overlapped.

    decode -> faces (detect, track) -> restore (align, KEEP, all tracks batched) -> compose (paste) -> encode

One small module per stage (`decode`, `faces`, `restore`, `compose`, `encode`), all with one interface
(`stage.Stage`: push an item, get the outputs ready); `runner` runs groups of them in worker processes,
threads or inline, joined by bounded queues (the grouping is `options.STAGE_GROUPS`, chosen by the device);
`pipeline.Pipeline` is built once from `options.BuildOptions` and runs one input at a time with its
`options.RunOptions`; `batch` runs a folder of them, skipping finished ones and sharding over
`torchrun` processes, or (`ray_engine`, `--set engine=ray`) handing them video by video to Ray workers.
"""

from .batch import prepare_process, restore_inputs
from .inputs import Input, collect_inputs, outputs_of
from .items import StageError
from .options import OVERLAP_MODES, STAGE_GROUPS, STAGE_TIMERS, STAGES, BuildOptions, PipelineOptions, RunOptions
from .pipeline import Pipeline

__all__ = [
    "OVERLAP_MODES",
    "STAGES",
    "STAGE_GROUPS",
    "STAGE_TIMERS",
    "BuildOptions",
    "Input",
    "Pipeline",
    "PipelineOptions",
    "RunOptions",
    "StageError",
    "collect_inputs",
    "outputs_of",
    "prepare_process",
    "restore_inputs",
]
