"""Many inputs in one call: skip the finished ones, share the rest over `torchrun` processes (issue #11).

    python inference.py -i videos/ -o out                               # one output per video
    torchrun --nproc_per_node 4 inference.py -i videos/ -o out          # 4 processes (GPUs), one share each

An input is finished when its output exists and its summary names it (outputs appear only once complete:
each run writes hidden partial files of its own, then the summary, then moves them into place);
`--overwrite` redoes it. An output file that no summary names was not written by this program: its input
is refused with one `error:` line (the others go on) unless `--overwrite`. Two runs on the same output
folder share it: an output another run is writing (its lock file is held, `keep.paths.FileLock`) is put
off, then waited for and skipped if that run finished it. Under torchrun (WORLD_SIZE > 1) rank 0 lists
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
from ..paths import FileLock
from .inputs import Input, check_outputs, make_output_folder, outputs_of
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
    items: list[Input],
    outdir: Path,
    options: PipelineOptions,
    *,
    folder: Path | None = None,
    keep_going: bool = True,
    progress: bool = True,
) -> BatchResult:
    """Restore every unfinished input (this process's share under torchrun); rank 0 returns the totals.

    Every output is checked first (none may land on an input, nor inside `folder`, the folder the inputs
    were collected from) and the output folder made, before any model is loaded.
    keep_going: report a failing input and go on (a folder); False: raise its KeepError (one input).
    """
    check_outputs(
        items, folder, outdir, save_frames=options.save_frames, save_faces=options.save_faces,
        container=options.container,
    )  # fmt: skip
    make_output_folder(outdir)
    dist = Distributed(options.device)
    try:
        mine, skipped, refused = _share(items, outdir, options, dist)
        if refused and not keep_going:
            raise KeepError(refused[0][1])  # one input: before any model is loaded
        result = BatchResult(skipped=skipped if dist.rank == 0 else [], failed=refused if dist.rank == 0 else [])
        for source, message in result.failed:
            print(f"error: {source}: {message}", file=sys.stderr, flush=True)
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


def _share(items: list[Input], outdir: Path, options: PipelineOptions, dist: Distributed) -> tuple[list, list, list]:
    """This process's inputs, the finished ones (skipped) and those refused because a file this program did not
    write is in the way (input, message); rank 0 decides for every process."""
    plan = None
    if dist.rank == 0:
        todo, skipped, refused = [], [], []
        for item in items:
            out = outputs_of(item, outdir, options.container)
            if not options.overwrite and out.finished():
                log.info("skip %s: %s exists (--overwrite redoes it)", item.source, out.main)
                skipped.append(str(out.main))
                continue
            try:
                out.check_replaceable(
                    overwrite=options.overwrite, save_faces=options.save_faces, save_frames=options.save_frames
                )
            except KeepError as exc:
                refused.append((str(item.source), str(exc)))
                continue
            todo.append(item)
        plan = (todo, skipped, refused)
    todo, skipped, refused = dist.broadcast(plan)
    return todo[dist.rank :: dist.world], skipped, refused


def _run(
    items: list[Input], outdir: Path, options: PipelineOptions, result: BatchResult, keep_going: bool, progress: bool
) -> None:
    """Restore `items` in order; one whose output another run is writing (its lock is held) is put off until
    the others are done, then waited for: if that run finished it, it is skipped."""
    overall = tqdm(
        total=len(items), unit="video", desc="videos", disable=None if progress and len(items) > 1 else True, position=0
    )
    with Pipeline(options) as pipeline:
        queue = [(item, False) for item in items]
        while queue:
            item, wait = queue.pop(0)
            out = outputs_of(item, outdir, options.container)
            lock = FileLock(out.lock)
            if wait:
                log.info("%s: waiting for the other run that writes %s", item.source, out.main)
            if not lock.acquire(wait=wait):
                log.info("%s: another run is writing %s; coming back to it later", item.source, out.main)
                queue.append((item, True))
                continue
            try:
                if not options.overwrite and out.finished():  # finished since the list was made
                    log.info("skip %s: %s was finished by another run", item.source, out.main)
                    result.skipped.append(str(out.main))
                else:
                    summary = pipeline.restore(item, out, progress=progress)
                    result.done.append(summary)
                    report(summary)
            except KeepError as exc:
                if not keep_going:
                    raise
                print(f"error: {item.source}: {exc}", file=sys.stderr, flush=True)
                result.failed.append((str(item.source), str(exc)))
            finally:
                lock.release()
            overall.update(1)
    overall.close()


def report(summary: dict) -> None:
    """The lines a user reads after each input: warnings, then what was done (and what of the input was not
    kept: the summary's `streams` says why)."""
    if summary["stopped"]:
        print(f"warning: {summary['stopped']}; restored the {summary['frames']} frames that decoded", file=sys.stderr)
    if summary["resized"]:
        print(f"warning: {summary['input']}: {summary['resized']}", file=sys.stderr)
    if summary["faces"] == 0:
        print(f"warning: no face found in {summary['input']}; the output is the input re-encoded", file=sys.stderr)
    dropped = summary["streams"]["not_kept"]
    print(
        f"done: {summary['frames']} frames, {summary['faces']} faces in {summary['tracks']} tracks "
        f"(detector {summary['detector']}), {summary['seconds']:.1f} s ({summary['frames_per_second']:.2f} frames/s)"
        f" -> {summary['output']}" + (f" (not kept: {'; '.join(dropped)})" if dropped else ""),
        flush=True,
    )
