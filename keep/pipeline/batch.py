"""Many inputs in one call: skip the finished ones, share the rest over `torchrun` processes,
or over the workers of a Ray cluster (`--set engine=ray`, `ray_engine`).

    python inference.py -i videos/ -o out                               # one output per video
    torchrun --nproc_per_node 4 inference.py -i videos/ -o out          # 4 processes (GPUs), one share each
    python inference.py -i videos/ -o out --set engine=ray              # Ray workers, the next video to a free one

An input is finished when its output exists and its summary names it (outputs appear only once complete:
each run writes hidden partial files of its own, then the summary, then moves them into place);
`--overwrite` redoes it. An output file that no summary names was not written by this program: its input
is refused with one `error:` line (the others go on) unless `--overwrite`. Two runs on the same output
folder share it: an output another run is writing (its lock file is held, `keep.paths.FileLock`) is put
off, then waited for and skipped if that run finished it. Under torchrun (WORLD_SIZE > 1) rank 0 lists
the unfinished inputs and broadcasts the list (so every process shares out the same list, whatever
the others have finished meanwhile), process r takes inputs r, r + N, r + 2N, ... on GPU `LOCAL_RANK`
(or the CPU), and rank 0 gathers and reports the totals. A failing input is reported as one `error:`
line and the others go on. Every engine restores an input through `restore_one` (lock, skip if finished,
remove stale partial files, restore).
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from tqdm import tqdm

from ..distributed import start_process_group, stop_process_group, torchrun_place
from ..errors import KeepError
from ..paths import FileLock
from .inputs import Input, Outputs, check_outputs, make_output_folder, outputs_of
from .options import PipelineOptions, RunOptions
from .pipeline import Pipeline

log = logging.getLogger(__name__)


@dataclass
class BatchResult:
    done: list[dict] = field(default_factory=list)  # summaries
    skipped: list[str] = field(default_factory=list)  # outputs that already existed
    failed: list[tuple[str, str]] = field(default_factory=list)  # (input, error message)


class Distributed:
    """Broadcast and gather across torchrun's processes (`keep.distributed` starts the group); one process
    without torchrun."""

    def __init__(self, device: str):
        place = start_process_group(device)
        self.world, self.rank, self.active = place.world, place.rank, place.active
        self.device = str(place.device_of(device)) if place.active else device  # cuda -> cuda:LOCAL_RANK

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
            stop_process_group()


def prepare_process(options: PipelineOptions, threads: int | None = None) -> None:
    """Make this process ready to restore with `options` (the command line's process, or a Ray worker's):
    the device resolved into `options.device` (KeepError for one that is not there), torch's threads set
    (`threads`, or under torchrun the node's free cores shared by its processes), the CPU allocator tuned."""
    from ..devices import resolve_device
    from ..threads import default_threads, set_threads

    device = resolve_device(options.device)
    options.device = str(device)
    local_world = torchrun_place().local_world
    if threads is None and local_world > 1 and device.type == "cpu":
        threads = max(1, default_threads() // local_world)  # torchrun processes share the cores
    set_threads(threads)
    if device.type == "cpu":
        from ..precision import reuse_freed_memory

        reuse_freed_memory()  # large activations reuse freed heap memory: 1.18x faster on CPU (docs/speed.md)


def restore_inputs(
    items: list[Input],
    outdir: Path,
    options: PipelineOptions,
    *,
    folder: Path | None = None,
    keep_going: bool = True,
    progress: bool = True,
    threads: int | None = None,
) -> BatchResult:
    """Restore every unfinished input (this process's share under torchrun); rank 0 returns the totals.
    With `options.engine == "ray"` the inputs go to Ray workers instead, video by video (`ray_engine`;
    `threads`: each worker's torch threads).

    Every output is checked first (none may land on an input, nor inside `folder`, the folder the inputs
    were collected from) and the output folder made, before any model is loaded.
    keep_going: report a failing input and go on (a folder); False: raise its KeepError (one input).
    """
    check_outputs(
        items, folder, outdir, save_frames=options.save_frames, save_faces=options.save_faces,
        container=options.container,
    )  # fmt: skip
    make_output_folder(outdir)
    if options.engine == "ray":
        from .ray_engine import restore_on_ray

        return restore_on_ray(items, outdir, options, folder=folder, keep_going=keep_going, progress=progress,
                              threads=threads)  # fmt: skip
    dist = Distributed(options.device)
    try:
        plan = unfinished(items, outdir, options) if dist.rank == 0 else None
        todo, finished, refused = dist.broadcast(plan)  # one list for all, whatever the others finish meanwhile
        if refused and not keep_going:
            raise KeepError(refused[0][1])  # one input: before any model is loaded
        mine = todo[dist.rank :: dist.world]
        result = BatchResult()
        if dist.rank == 0:
            result.skipped = [output for _, output in finished]
            result.failed = [(str(item.source), message) for item, message in refused]
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


def unfinished(
    items: list[Input], outdir: Path, options: PipelineOptions
) -> tuple[list[Input], list[tuple[Input, str]], list[tuple[Input, str]]]:
    """The inputs to restore; those skipped because their output is finished (`Outputs.finished`; `--overwrite`
    redoes them), with the output; and those refused because a file this program did not write is in the way
    of their outputs (`Outputs.check_replaceable`), with the message."""
    todo, finished, refused = [], [], []
    for item in items:
        out = outputs_of(item, outdir, options.container)
        if not options.overwrite and out.finished():
            log.info("skip %s: %s exists (--overwrite redoes it)", item.source, out.main)
            finished.append((item, str(out.main)))
            continue
        try:
            out.check_replaceable(overwrite=options.overwrite, save_faces=options.save_faces,
                                  save_frames=options.save_frames)  # fmt: skip
        except KeepError as exc:
            refused.append((item, str(exc)))
            continue
        todo.append(item)
    return todo, finished, refused


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
            try:
                status, summary = restore_one(pipeline, item, out, options, wait=wait, progress=progress)
            except KeepError as exc:
                if not keep_going:
                    raise
                print(f"error: {item.source}: {exc}", file=sys.stderr, flush=True)
                result.failed.append((str(item.source), str(exc)))
            else:
                if status == "busy":
                    queue.append((item, True))
                    continue
                if status == "skipped":
                    result.skipped.append(str(out.main))
                else:
                    result.done.append(summary)
                    report(summary)
            overall.update(1)
    overall.close()


def restore_one(
    pipeline: Pipeline, item: Input, out: Outputs, settings: RunOptions, *, wait: bool, progress: bool
) -> tuple[str, dict | None]:
    """Restore one input with `settings` (or a `PipelineOptions`'s per-run part) under its output's lock
    (`keep.paths.FileLock`): the unit of work of every engine.

    Returns ("done", summary); ("skipped", None) when another run finished the output since the list was made;
    ("busy", None) when another run is writing it and not `wait` (put it off, then call again with `wait`).
    A failure of the input itself is its KeepError.
    """
    lock = FileLock(out.lock)
    if wait:
        log.info("%s: waiting for the other run that writes %s", item.source, out.main)
    if not lock.acquire(wait=wait):
        log.info("%s: another run is writing %s; coming back to it later", item.source, out.main)
        return "busy", None
    settings = RunOptions.of(settings)
    try:
        if not settings.overwrite and out.finished():  # finished since the list was made
            log.info("skip %s: %s was finished by another run", item.source, out.main)
            return "skipped", None
        return "done", pipeline.restore(item, out, settings, progress=progress)  # stale partials removed there
    finally:
        lock.release()


def report(summary: dict) -> None:
    """The lines a user reads after each input: warnings, then what was done (and what of the input was not
    kept: the summary's `streams` says why)."""
    if summary["stopped"]:
        print(f"warning: {summary['stopped']}; restored the {summary['frames']} frames that decoded", file=sys.stderr)
    if summary["resized"]:
        print(f"warning: {summary['input']}: {summary['resized']}", file=sys.stderr)
    if summary["exif_turned"]:
        count = summary["exif_turned"]
        what = "turned upright by its" if count == 1 else f"{count} images turned upright by their"
        print(f"{summary['input']}: {what} EXIF orientation", flush=True)
    if summary["colour"]["fallback"]:
        print(f"warning: {summary['input']}: {summary['colour']['fallback']}", file=sys.stderr)
    if summary["tracks"] == 0:
        found = "no face found" if not summary["short_tracks"] else "only tracks shorter than --set min_track found"
        print(f"warning: {found} in {summary['input']}; the output is the input re-encoded", file=sys.stderr)
    choice, dropped = summary["choice"], summary["streams"]["not_kept"]
    if choice["note"]:
        print(f"warning: {summary['input']}: {choice['note']}", file=sys.stderr)
    chosen = ""
    if choice["faces"] != "all":
        chosen = f", restored {_tracks(choice['restored_tracks'])} (--faces {choice['faces']})"
    print(
        f"done: {summary['frames']} frames, {summary['faces']} faces in {summary['tracks']} tracks{chosen} "
        f"(detector {summary['detector']}), {summary['seconds']:.1f} s ({summary['frames_per_second']:.2f} frames/s)"
        f" -> {summary['output']}" + (f" (not kept: {'; '.join(dropped)})" if dropped else ""),
        flush=True,
    )


def _tracks(ids: list[int]) -> str:
    return "no track" if not ids else f"track {ids[0]}" if len(ids) == 1 else "tracks " + ", ".join(map(str, ids))
