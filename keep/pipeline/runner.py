"""Running groups of stages overlapped, joined by bounded queues, frame order kept.

The stages are grouped into workers by `options.stage_groups` (data, decided by the device). On the CPU:

    front worker                     main thread                      back worker
    decode -> faces (detect, track)  --Q1-->  restore (align, flow, network)  --Q2-->  compose -> encode
         ^                                                                                     |
         +-------------------------------- free frame slots <---------------------------------+

On a GPU the detector moves into the main group, batched beside the network: front = decode,
main = faces -> restore. Every group runs the same loop (`run_group`): its input (the source stage's
frames, or the queue from the group before) pushed through its `Chain` of stages, each output put on
the queue to the group after, an `End` with what the stages counted at the end of each input.

`mode="processes"` (default) runs each worker group in a process of its own, forked from a server process that
imported the pipeline once (`process_context`): dlib's detector and the Python tracking hold the GIL, so in
threads they would stall the network (measured: a detection thread beside the network thread made both slower
than running one after the other). Frames stay in a shared `FramePool`; the queues carry slot numbers,
landmarks and restored crops. `mode="threads"` runs the same groups in threads (cheaper to start; for small
jobs and tests), `mode="off"` runs every stage one after another in the calling thread (each stage's time
alone, for the benchmark).

Memory is bounded by the pool: the decoder waits for a free slot. An exception in any stage sets the
shared stop flag; every stage leaves its loop, and the main thread raises one error (a `KeepError` for
bad input, else `StageError`) - no hang, no traceback unless KEEP_DEBUG is set (keep.pipeline.workers).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from .items import End, Failure, Job, Ready, StageError, StageTimer
from .stage import Chain, FreeSlots, Progress, merge_stats
from .workers import (
    POLL_S,
    Stopped,
    Waiter,
    WorkerSettings,
    process_context,
    raise_failure,
    release_queues,
    unlink_semaphores,
    worker_lost,
    worker_niceness,
)

log = logging.getLogger(__name__)

FACES_SLACK = 8  # frames waiting for the restore stage beyond two windows
SLOTS_SLACK = 3  # overlapped: a frame in each worker's hands between its queues


def faces_queue_size(window: int) -> int:
    """Q1 (into the main group) holds two windows and some: while the network restores window k, the front
    worker detects window k+1 and goes on into k+2 instead of blocking, so the restore stage finds its next
    window ready (CPU, 200 frames of the benchmark clip: 21.5 s end to end with 8 slots, 20.5 s with one
    window; 1080p on a GPU: the front stood blocked 11 s of 28.6 with one window; docs/inference.md)."""
    return 2 * window + FACES_SLACK


def restored_queue_size(window: int) -> int:
    """Q2 (out of the main group) holds two windows: a whole restored window goes out at once, while the back
    worker is still pasting the previous one (with one window the restore stage stood blocked 4.2 s of 28.6
    at 1080p)."""
    return 2 * window


class QueuePort:
    """One group's queues for one input: items in from the group before (the first group: its source stage's
    frames), outputs out to the group after (the last group's `End`: to the events queue), frame slots from
    the shared free queue (tagged with the input's number). Time spent waiting is counted per group."""

    def __init__(self, name: str, queues: dict, wait: Waiter, generation: int):
        self.name, self.q, self.wait, self.generation = name, queues, wait, generation
        self.timer = StageTimer()
        self.upstream: dict = {}  # what the groups before counted (their End)

    def items(self, chain: Chain) -> Iterator:
        if self.q.get("inbox") is None:
            yield from chain.frames()
            return
        while True:
            with self.timer(f"wait {self.name}: input"):
                item = self.wait.get(self.q["inbox"])
            if isinstance(item, End):
                self.upstream = item.stats
                return
            yield item

    def put(self, item: Any) -> None:
        if self.q.get("outbox") is not None:  # the last stage of the last group (encode) emits nothing
            with self.timer(f"wait {self.name}: output"):
                self.wait.put(self.q["outbox"], item)

    def end(self, stats: dict) -> dict:
        if self.q.get("outbox") is not None:
            self.wait.put(self.q["outbox"], End(stats))
        else:
            self.q["events"].put((self.name, End(stats)))
        return stats

    def acquire(self) -> int:
        while True:  # slots of an earlier input may still be in the queue: skip them
            with self.timer(f"wait {self.name}: free slot"):
                generation, slot = self.wait.get(self.q["free"])
            if generation == self.generation:
                return slot

    def release(self, slot: int) -> None:
        self.q["free"].put((self.generation, slot))


class InlinePort(FreeSlots):
    """`mode="off"`: one chain of every stage in the calling thread; the source's frames in, nothing out."""

    upstream: dict = {}

    def __init__(self, slots: int):
        super().__init__(slots)
        self.timer = StageTimer()

    def items(self, chain: Chain) -> Iterator:
        return chain.frames()

    def put(self, item: Any) -> None:
        pass

    def end(self, stats: dict) -> dict:
        return stats


def run_group(chain: Chain, job: Job, port: QueuePort | InlinePort) -> dict:
    """One input through one group of stages (the same loop in a worker, in the main thread and inline);
    returns the stats it passed on: the groups' before it, its stages' and its waits."""
    try:
        chain.start(job, port)
        for item in port.items(chain):
            chain.push(item, port.put)
        chain.finish(port.put)
    except BaseException:
        chain.abort()
        raise
    return port.end(merge_stats(port.upstream, chain.stats(), {"timings": dict(port.timer.seconds)}))


def serve(name: str, specs: Sequence, queues: dict, stop, settings: WorkerSettings) -> None:
    """A worker's life: build its stages, then run one input after another through them until told to stop
    (None) or stopped; a failure sets the stop flag and goes to the main thread as one `Failure` event."""
    if settings.child:
        settings.apply()
    wait = Waiter(stop)
    try:
        chain = Chain(spec.build() for spec in specs)
        queues["events"].put((name, Ready({**chain.info(), "held": chain.held})))
        while (task := wait.get(queues["jobs"])) is not None:
            generation, job = task
            run_group(chain, job, QueuePort(name, queues, wait, generation))
    except Stopped:
        return
    except BaseException as exc:
        stop.set()
        queues["events"].put((name, Failure.from_exception(name, exc)))
    finally:
        if settings.child:  # what this worker put on the stage queues may never be read now: exit without flushing it
            release_queues(queues, keep=("events",))


class Runner:
    """Runs one input after another through groups of stages: `groups` = ((name, stage specs), ...) in the
    order a frame passes them; the group named `main` runs in the calling thread, the others in worker
    processes or threads (`mode`), or every stage in the calling thread (`mode="off"`).

    The stages are built once (each worker builds its own from its specs, which hold only their built-once
    settings; what each input chooses comes with its `Job`: `RunOptions`);
    `info` says what was built (detector, mask, flow, ...). `built` ({spec: stage}) lends the stages of this
    process to another runner of the same process (the survey pass's and the restoring pass's detector), which
    runs its inputs at other times. After a failure the workers are stopped (`stopped`) and the runner cannot be
    used again."""

    def __init__(
        self, groups: Sequence[tuple[str, Sequence]], *, mode: str, window: int, device: str, built: dict | None = None
    ):
        self.names = [name for name, _ in groups]
        self.specs = [spec for _, specs in groups for spec in specs]
        if "main" not in self.names:
            raise StageError(f"no 'main' group among {self.names}")
        self.mode, self.window = mode, window
        self.overlapped = mode != "off"
        self.stopped = False
        self.ready = False  # every worker has built its stages
        self.generation = 0
        self.source = None  # the input being restored (named when a worker is lost)
        self.workers: dict[str, Any] = {}
        # processes: the workers' fork server starts now and imports while this process builds its stages
        self.context = process_context() if mode == "processes" else None
        in_process = [(name, specs) for name, specs in groups if name == "main" or not self.overlapped]
        built = {} if built is None else built
        for spec in (spec for _, specs in in_process for spec in specs):
            if spec not in built:
                built[spec] = spec.build()
        self.chains = {name: Chain(built[spec] for spec in specs) for name, specs in in_process}
        self.info = {key: value for chain in self.chains.values() for key, value in chain.info().items()}
        self.held = sum(chain.held for chain in self.chains.values())
        if self.overlapped:
            self._start_workers(groups, device)

    @property
    def source_in_process(self) -> bool:
        """Whether the source (decode) stage runs in this process, where it can read the main process's reader."""
        return self.mode != "processes" or self.names[0] == "main"

    def pool_size(self, settings: Any) -> int:
        """Frame slots for what every stage holds (for a run with `settings`, `RunOptions`: a spec's `run_held`),
        what every queue holds and a few in between."""
        held = self.held + sum(spec.run_held(settings) for spec in self.specs if hasattr(spec, "run_held"))
        if not self.overlapped:
            return held + 2
        links = sum(self._link_size(index) for index in range(1, len(self.names)))
        return held + links + SLOTS_SLACK

    def _link_size(self, index: int) -> int:
        """The size of the queue into group `index`: towards the main group Q1's, after it Q2's."""
        main = self.names.index("main")
        return faces_queue_size(self.window) if index <= main else restored_queue_size(self.window)

    def _start_workers(self, groups: Sequence[tuple[str, Sequence]], device: str) -> None:
        ctx = self.context
        child = ctx is not None
        make_queue = ctx.Queue if child else queue.Queue
        self.stop = ctx.Event() if child else threading.Event()
        self.q = {"free": make_queue(), "events": make_queue()}  # every queue, by name
        for index, name in enumerate(self.names):
            if name != "main":
                self.q[f"jobs {name}"] = make_queue()
            if index > 0:
                self.q[f"to {name}"] = make_queue(self._link_size(index))
        after = {name: f"to {self.names[index + 1]}" for index, name in enumerate(self.names[:-1])}
        self.queues = {name: self._view(name, after.get(name)) for name in self.names}
        level = logging.getLogger().getEffectiveLevel()
        settings = WorkerSettings(
            child=child, log_level=level, threads=torch.get_num_threads(), niceness=worker_niceness(device),
            reuse_memory=device == "cpu",
        )  # fmt: skip
        for name, specs in groups:
            if name != "main":
                target = ctx.Process if child else threading.Thread
                args = (name, specs, self.queues[name], self.stop, settings)
                self.workers[name] = target(target=serve, args=args, name=f"keep-{name}", daemon=True)
                self.workers[name].start()
        self.wait = Waiter(self.stop, self._check_workers)
        self.pending: dict[str, deque] = {name: deque() for name in self.names}
        try:
            for name in self.workers:
                ready = self._event(name, Ready).info
                self.held += ready.pop("held")
                self.info.update(ready)
        except BaseException:
            self.abort()
            raise
        self.ready = True
        if child:  # every worker holds its queues and the stop flag now (it unpickled them before Ready)
            unlink_semaphores([self.stop, *self.q.values()])

    def _view(self, name: str, outbox: str | None) -> dict:
        """A group's queues: the shared free slots and events, its jobs, its inbox and outbox (None: the source
        group has no inbox, the last no outbox)."""
        own = {"jobs": self.q.get(f"jobs {name}"), "inbox": self.q.get(f"to {name}"), "outbox": self.q.get(outbox)}
        return {"free": self.q["free"], "events": self.q["events"], **own}

    def run(self, job: Job, progress: Callable[[int], None]) -> dict:
        """Stream one input through every stage; returns what the stages counted (`timings` summed by name).
        progress: called with 1 for every frame the main group passes on (a restored frame)."""
        if not self.overlapped:
            stages = [stage for name in self.names for stage in self._with_progress(name, progress)]
            return run_group(Chain(stages), job, InlinePort(len(job.pool)))
        self.generation += 1
        self.source = job.source
        for slot in range(len(job.pool)):
            self.q["free"].put((self.generation, slot))
        for name in self.workers:
            self.queues[name]["jobs"].put((self.generation, job))
        try:
            try:
                port = QueuePort("main", self.queues["main"], self.wait, self.generation)
                stats = run_group(Chain(self._with_progress("main", progress)), job, port)
                if self.names[-1] != "main":
                    stats = self._event(self.names[-1], End).stats
            except Stopped:
                self._raise_failure()
        except BaseException:
            self.abort()
            raise
        return stats

    def _with_progress(self, name: str, progress: Callable[[int], None]) -> list:
        stages = self.chains[name].stages
        return [*stages, Progress(progress)] if name == "main" else stages

    def _check_workers(self) -> None:
        for name, worker in self.workers.items():
            if not worker.is_alive():
                self.stop.set()
                raise worker_lost(name, worker, self.mode == "processes", started=self.ready, source=self.source)

    def _event(self, name: str, kind: type) -> Any:
        """Wait for the next `kind` event of group `name` (a Failure of any worker is raised)."""
        while True:
            if self.pending[name]:
                event = self.pending[name].popleft()
            else:
                try:
                    sender, event = self.q["events"].get(timeout=POLL_S)
                except queue.Empty:
                    if self.stop.is_set():
                        self._raise_failure()
                    self._check_workers()
                    continue
                if isinstance(event, Failure):
                    raise_failure(event)
                if sender != name:
                    self.pending[sender].append(event)
                    continue
            if isinstance(event, kind):
                return event
            raise StageError(f"{name} stage: unexpected {type(event).__name__} while waiting for {kind.__name__}")

    def _raise_failure(self) -> None:
        """The stop flag is set: raise the failure a worker reported (waiting a little for it)."""
        for _ in range(int(5 / POLL_S)):
            try:
                _, event = self.q["events"].get(timeout=POLL_S)
            except queue.Empty:
                continue
            if isinstance(event, Failure):
                raise_failure(event)
        raise StageError("a stage stopped without saying why")

    def close(self) -> None:
        """Let the workers finish and exit (after `abort` they are gone already)."""
        if self.stopped:
            return
        for name in self.workers:
            self.queues[name]["jobs"].put(None)
        self._join(timeout=10)

    def abort(self) -> None:
        """Stop every worker now (after a failure or an interrupt); the runner cannot be used again."""
        if not self.overlapped:
            return
        self.stopped = True
        self.stop.set()
        self._join(timeout=3)
        release_queues(self.q)

    def _join(self, timeout: float) -> None:
        for worker in self.workers.values():
            worker.join(timeout)
            if worker.is_alive() and hasattr(worker, "kill"):  # SIGKILL: the workers ignore SIGTERM
                worker.kill()
                worker.join(10)  # a killed process is gone at once; a loaded machine may take a moment to reap it
