"""Restore every face in videos, streaming, with the stages overlapped (issues #3, #11).

    decode -> detect / track -> align / restore (KEEP, all tracks batched) -> paste -> encode

One small module per stage (`decode`, `faces`, `restore`, `compose`, `encode`); `runner` joins them with
bounded queues in processes or threads; `pipeline.Pipeline` runs one input; `batch` runs a folder of
them, skipping finished ones and sharding over `torchrun` processes.
"""

from .batch import restore_inputs
from .inputs import Input, collect_inputs, outputs_of
from .items import StageError
from .options import OVERLAP_MODES, STAGES, PipelineOptions
from .pipeline import Pipeline

__all__ = [
    "OVERLAP_MODES",
    "STAGES",
    "Input",
    "Pipeline",
    "PipelineOptions",
    "StageError",
    "collect_inputs",
    "outputs_of",
    "restore_inputs",
]
