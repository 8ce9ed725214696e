"""Many inputs in one call: skip the finished ones, share the rest over `torchrun` processes (issue #11).

    python inference.py -i videos/ -o out                               # one output per video
    torchrun --nproc_per_node 4 inference.py -i videos/ -o out          # 4 processes (GPUs), one share each

An input is finished when its output exists (outputs appear only once complete: they are written to a
hidden partial file and renamed); `--overwrite` redoes it. Under torchrun (WORLD_SIZE > 1) rank 0 lists
the unfinished inputs and broadcasts the list (so every process shares out the same list, whatever
the others have finished meanwhile), process r takes inputs r, r + N, r + 2N, ... on GPU `LOCAL_RANK`
(or the CPU), and rank 0 gathers and reports the totals. A failing input is reported as one `error:`
line and the others go on.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from tqdm import tqdm

from ..errors import KeepError
from .inputs import Input, outputs_of
from .options import PipelineOptions
from .pipeline import Pipeline

log = logging.getLogger(__name__)


@dataclass
class BatchResult:
    done: list[dict] = field(default_factory=list)  # summaries
    skipped: list[str] = field(default_factory=list)  # outputs that already existed
    failed: list[tuple[str, str]] = field(default_factory=list)  # (input, error message)


class Distributed:
    """This process's place under torchrun (rank, world size, local rank), with torch.distributed set up."""

    def __init__(self, device: str):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.active = self.world > 1
        self.device = device
        if self.active:
            import torch.distributed as dist

            if device.startswith("cuda"):
                self.device = f"cuda:{self.local_rank}"
            if not dist.is_initialized():
                dist.init_process_group(backend="nccl" if self.device.startswith("cuda") else "gloo")

    def broadcast(self, obj):
        if not self.active:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj) -> list:
        if not self.active:
            return [obj]
        import torch.distributed as dist

        boxes = [None] * self.world
        dist.all_gather_object(boxes, obj)
        return boxes

    def close(self) -> None:
        if self.active:
            import torch.distributed as dist

            dist.destroy_process_group()


def restore_inputs(
    items: list[Input], outdir: Path, options: PipelineOptions, *, keep_going: bool = True, progress: bool = True
) -> BatchResult:
    """Restore every unfinished input (this process's share under torchrun); rank 0 returns the totals.

    keep_going: report a failing input and go on (a folder); False: raise its KeepError (one input).
    """
    dist = Distributed(options.device)
    try:
        mine, skipped = _share(items, outdir, options.overwrite, dist)
        result = BatchResult(skipped=skipped if dist.rank == 0 else [])
        if mine:
            _run(mine, outdir, replace(options, device=dist.device), result, keep_going, progress and dist.rank == 0)
        results = dist.gather(result)
    finally:
        dist.close()
    total = BatchResult()
    for part in results:
        total.done += part.done
        total.skipped += part.skipped
        total.failed += part.failed
    return total


def _share(items: list[Input], outdir: Path, overwrite: bool, dist: Distributed) -> tuple[list[Input], list[str]]:
    plan = None
    if dist.rank == 0:
        finished = [item for item in items if not overwrite and outputs_of(item, outdir).main.exists()]
        for item in finished:
            log.info("skip %s: %s exists (--overwrite redoes it)", item.source, outputs_of(item, outdir).main)
        plan = ([item for item in items if item not in finished], [str(outputs_of(i, outdir).main) for i in finished])
    todo, skipped = dist.broadcast(plan)
    return todo[dist.rank :: dist.world], skipped


def _run(
    items: list[Input], outdir: Path, options: PipelineOptions, result: BatchResult, keep_going: bool, progress: bool
) -> None:
    overall = tqdm(
        total=len(items), unit="video", desc="videos", disable=None if progress and len(items) > 1 else True, position=0
    )
    with Pipeline(options) as pipeline:
        for item in items:
            try:
                summary = pipeline.run(item, outdir, progress=progress)
                result.done.append(summary)
                report(summary)
            except KeepError as exc:
                if not keep_going:
                    raise
                print(f"error: {item.source}: {exc}", file=sys.stderr, flush=True)
                result.failed.append((str(item.source), str(exc)))
            overall.update(1)
    overall.close()


def report(summary: dict) -> None:
    """The lines a user reads after each input: warnings, then what was done."""
    if summary["stopped"]:
        print(f"warning: {summary['stopped']}; restored the {summary['frames']} frames that decoded", file=sys.stderr)
    if summary["faces"] == 0:
        print(f"warning: no face found in {summary['input']}; the output is the input re-encoded", file=sys.stderr)
    print(
        f"done: {summary['frames']} frames, {summary['faces']} faces in {summary['tracks']} tracks "
        f"(detector {summary['detector']}), {summary['seconds']:.1f} s ({summary['frames_per_second']:.2f} frames/s)"
        f" -> {summary['output']}",
        flush=True,
    )
