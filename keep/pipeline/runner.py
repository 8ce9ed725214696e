"""Running the stages overlapped, joined by bounded queues, frame order kept (issue #11):

    front worker                        main thread                     back worker
    decode -> detect -> track  --Q1-->  align -> flow + network  --Q2-->  background -> paste -> encode
         ^                                                                                  |
         +-------------------------------- free frame slots <------------------------------+

`overlap="processes"` (default) runs the two workers in spawned processes: dlib's detector and the
Python tracking hold the GIL, so in threads they would stall the network (measured: a detection thread
beside the network thread made both slower than running one after the other). Frames stay in a shared
`FramePool`; the queues carry slot numbers, landmarks and restored crops. `overlap="threads"` runs the
same workers in threads (cheaper to start; for small jobs and tests), `overlap="off"` runs every stage
one after another in the calling thread (each stage's time alone, for the benchmark).

Memory is bounded by the pool: the decoder waits for a free slot. An exception in any stage sets the
shared stop flag; every stage leaves its loop, and the main thread raises one error (a `KeepError` for
bad input, else `StageError`) - no hang, no traceback unless KEEP_DEBUG is set.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import signal
import sys
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import cv2
import torch

from ..errors import KeepError
from .items import End, Failure, FramePool, Ready, StageError
from .options import PipelineOptions
from .restore import RestoreStage
from .workers import BackJob, BackWorker, FrontJob, FrontWorker

log = logging.getLogger(__name__)

POLL_S = 0.1  # how often a waiting stage checks whether the run is being stopped
FACES_SLACK = 8  # FaceFrames waiting for the restore stage beyond two windows


def faces_queue_size(window: int) -> int:
    """Q1 holds two windows and some: while the network restores window k, the front worker detects
    window k+1 and goes on into k+2 instead of blocking, so the restore stage finds its next window
    ready (CPU, 200 frames of the benchmark clip: 21.5 s end to end with 8 slots, 20.5 s with one window;
    1080p on a GPU: the front stood blocked 11 s of 28.6 with one window; docs/inference.md)."""
    return 2 * window + FACES_SLACK


def restored_queue_size(window: int) -> int:
    """Q2 holds two windows: a whole restored window goes out at once, while the back worker is still
    pasting the previous one (with one window the restore stage stood blocked 4.2 s of 28.6 at 1080p)."""
    return 2 * window


class Stopped(Exception):
    """Raised inside a waiting stage when another stage has failed."""


class _Waiter:
    """Blocking queue operations that give up when `stop` is set or a peer is gone."""

    def __init__(self, stop, check: Callable[[], None] | None = None):
        self.stop = stop
        self.check = check

    def _idle(self) -> None:
        if self.stop.is_set():
            raise Stopped
        if self.check is not None:
            self.check()

    def get(self, q) -> Any:
        while True:
            try:
                return q.get(timeout=POLL_S)
            except queue.Empty:
                self._idle()

    def put(self, q, item: Any) -> None:
        while True:
            try:
                return q.put(item, timeout=POLL_S)
            except queue.Full:
                self._idle()


EXIT_ORPHANED = 3  # a worker's exit status when its main process ended first


def exit_with_parent() -> None:
    """In a worker process: exit as soon as the main process is gone, whatever the worker is doing (issue 19).

    A main process killed by SIGKILL may leave a message half-written in a queue (a restored window's crops are
    larger than a pipe writes at once); the worker reading it would wait for the rest forever, an orphan that
    keeps its output's partial file and semaphores. A thread that waits on the parent's sentinel ends the
    process instead; the next run on the same output removes the partial file (`Outputs.stale_partials`)."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        parent.join()
        os._exit(EXIT_ORPHANED)

    threading.Thread(target=watch, name="keep-parent-watch", daemon=True).start()


WORKER_NICENESS = 10  # CPU network: the worker processes yield the cores to the restore stage


def worker_niceness(options: PipelineOptions) -> int:
    """How much lower the worker processes' CPU priority is than the main process's.

    With the network on the CPU the restore stage is the critical path (the slowest stage, and every
    frame waits for it), so when the cores are contended the workers should give way to it: on the
    2-core benchmark (200 frames, tiny preset) the restore stage then ran at its full speed (13.4 s of
    work in 13.4 s, against 16.4 s when it shared the cores equally) and the clip took 17.8 s instead of
    19.5 s. With the network on a GPU the workers' CPU stages may be the slowest: equal priority."""
    return WORKER_NICENESS if options.device == "cpu" else 0


def _serve(
    role: str,
    build: Callable,
    args: tuple,
    q: dict,
    stop,
    log_level: int,
    threads: int,
    child: bool,
    niceness: int,
    reuse_memory: bool,
) -> None:
    """A worker's life: build its stages, then serve jobs until told to stop (None) or stopped."""
    if child:
        exit_with_parent()
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process handles Ctrl-C and stops us
        logging.basicConfig(level=log_level, format="%(message)s", stream=sys.stderr)
        torch.set_num_threads(threads)
        cv2.setNumThreads(threads)  # as the main process (keep.cli.set_threads): warps, blends, resizes
        if niceness and hasattr(os, "nice"):
            os.nice(niceness)
        if reuse_memory:
            from ..precision import reuse_freed_memory

            reuse_freed_memory()  # as the main process on CPU: RetinaFace at 1080p 48-53 -> 26-35 ms/frame
    wait = _Waiter(stop)
    try:
        worker = build(*args)
        q["events"].put((role, Ready(worker.info())))
        while (task := wait.get(q[f"{role}_jobs"])) is not None:
            generation, job = task
            if role == "front":

                def acquire(generation: int = generation) -> int:
                    while True:  # slots of an earlier video may still be in the queue: skip them
                        with worker.timer("wait front: free slot"):
                            slot_generation, slot = wait.get(q["free"])
                        if slot_generation == generation:
                            return slot

                def emit(item) -> None:
                    with worker.timer("wait front: restore busy"):
                        wait.put(q["faces"], item)

                stats = worker.run(job, acquire, emit)
                wait.put(q["faces"], End(stats))
            else:
                worker.begin(job, lambda slot, g=generation: q["free"].put((g, slot)))
                try:
                    while True:
                        with worker.timer("wait back: no restored frame"):
                            item = wait.get(q["restored"])
                        if isinstance(item, End):
                            break
                        worker.push(item)
                except BaseException:
                    worker.abort()
                    raise
                q["events"].put((role, End(worker.end())))
    except Stopped:
        return
    except BaseException as exc:
        stop.set()
        q["events"].put((role, Failure.from_exception(role, exc)))
    finally:
        if child:  # what this worker put on the stage queues may never be read now: exit without flushing it
            release_queues(q, keep=("events",))


def release_queues(q: dict, keep: tuple[str, ...] = ()) -> None:
    """Let this process exit without flushing what it put on process queues nobody reads any more.

    A `multiprocessing.Queue` hands items to a feeder thread, and the process's exit waits for that
    thread to write them into the pipe; when the reader is gone (a stopped stage) the write never ends
    and neither does the process (issue 19: an `error:` line, then a hang). Thread queues need nothing."""
    for name, item in q.items():
        if name not in keep and hasattr(item, "cancel_join_thread"):
            item.cancel_join_thread()
            item.close()


def worker_lost(role: str, worker, shared: bool, *, started: bool, source) -> Exception:
    """The error for a stage worker that ended without a word: killed from outside (the out-of-memory killer's
    SIGKILL, a SIGTERM) is a KeepError naming the signal and the input (issue 19); anything else is a bug."""
    code = getattr(worker, "exitcode", None)
    kind = "process" if shared else "thread"
    if code is not None and code < 0 and -code in (signal.SIGKILL, signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        hint = " (as the system's out-of-memory killer does)" if -code == signal.SIGKILL else ""
        cause = f"killed by {signal.Signals(-code).name}{hint}"
        where = f" while restoring {source}" if source is not None else " while starting"
        return KeepError(f"the {role} stage {kind} was {cause}{where}; nothing was written")
    hint = ""
    if shared and not started:  # died while starting: typically an unguarded script
        hint = (
            "; a script that runs the pipeline with overlap='processes' needs an "
            "`if __name__ == '__main__':` guard (or use overlap='threads')"
        )
    return StageError(f"the {role} stage {kind} ended unexpectedly (exit code {code}){hint}")


def unlink_semaphores(objects: list) -> None:
    """Remove the names of the semaphores inside `objects` (process queues, events) once every process that
    uses them has opened them (issue 19).

    Why: in a spawned process a semaphore is found by its name, so multiprocessing keeps each one's name until
    the process that made it exits normally, and registers it with its resource tracker meanwhile. After a
    SIGKILL of the main process nothing removed the names: the tracker found them when the workers exited and
    reported "leaked semaphore objects" (and removed them). A removed name does not affect the processes that
    hold the semaphore open, as with a file; removing the names as soon as the workers hold them leaves
    nothing behind whatever ends the run. Uses multiprocessing's own `SemLock` clean-up (the unlink and the
    tracker's unregistering) and cancels its exit-time copy; where those internals differ, nothing changes.
    """
    from multiprocessing import util
    from multiprocessing.synchronize import SemLock

    def semlocks(obj, depth: int = 0):
        if isinstance(obj, SemLock):
            yield obj
        elif depth < 3 and hasattr(obj, "__dict__"):
            for value in vars(obj).values():
                if isinstance(value, SemLock) or type(value).__module__ == "multiprocessing.synchronize":
                    yield from semlocks(value, depth + 1)

    try:
        names = {lock._semlock.name for obj in objects for lock in semlocks(obj)} - {None}
        registry = util._finalizer_registry
    except AttributeError:
        return
    for finalizer in list(registry.values()):
        args = getattr(finalizer, "_args", None)
        if getattr(finalizer, "_callback", None) is SemLock._cleanup and args and args[0] in names:
            finalizer.cancel()
            try:
                SemLock._cleanup(args[0])
            except OSError:
                pass


def raise_failure(failure: Failure) -> None:
    if os.environ.get("KEEP_DEBUG") and failure.traceback:
        print(failure.traceback, file=sys.stderr)
    if failure.user_error:
        raise KeepError(failure.message)
    raise StageError(f"{failure.stage} stage: {failure.message}")


class OverlappedRunner:
    """The front and back workers in processes or threads, and the queues between them."""

    def __init__(self, options: PipelineOptions, size: int, *, window: int):
        self.mode = options.overlap
        self.window = window
        child = self.shared = self.mode == "processes"
        ctx = multiprocessing.get_context("spawn") if child else None
        make_queue = ctx.Queue if child else queue.Queue
        self.stop = ctx.Event() if child else threading.Event()
        self.q = {
            "front_jobs": make_queue(),
            "back_jobs": make_queue(),
            "faces": make_queue(faces_queue_size(window)),
            "restored": make_queue(restored_queue_size(window)),
            "free": make_queue(),
            "events": make_queue(),
        }
        level = logging.getLogger().getEffectiveLevel()
        threads = torch.get_num_threads()
        niceness, reuse_memory = worker_niceness(options), options.device == "cpu"  # as the main process on CPU
        self.workers = {}
        for role, build, args in (("front", FrontWorker, (options,)), ("back", BackWorker, (options, size))):
            target_args = (role, build, args, self.q, self.stop, level, threads, child, niceness, reuse_memory)
            if child:
                worker = ctx.Process(target=_serve, args=target_args, name=f"keep-{role}", daemon=True)
            else:
                worker = threading.Thread(target=_serve, args=target_args, name=f"keep-{role}", daemon=True)
            worker.start()
            self.workers[role] = worker
        self.wait = _Waiter(self.stop, self._check_workers)
        self.pending: dict[str, deque] = {"front": deque(), "back": deque()}
        self.generation = 0
        self.source = None  # the input being restored (named when a worker is lost)
        self.info = {}
        try:
            for role in self.workers:
                self.info.update(self._event(role, Ready).info)
        except BaseException:
            self.abort()
            raise
        if child:  # both workers hold every queue and the stop flag now (they unpickled them before Ready)
            unlink_semaphores([self.stop, *self.q.values()])

    def pool_size(self, held: int) -> int:
        """Frame slots for: the front's look-ahead, Q1, one window being restored, Q2, paste and encode."""
        return held + faces_queue_size(self.window) + self.window + restored_queue_size(self.window) + 3

    def _check_workers(self) -> None:
        for role, worker in self.workers.items():
            if not worker.is_alive():
                self.stop.set()
                raise worker_lost(role, worker, self.shared, started=bool(self.info), source=self.source)

    def _event(self, role: str, kind: type) -> Any:
        """Wait for the next `kind` event of `role` (a Failure of any worker is raised)."""
        while True:
            if self.pending[role]:
                event = self.pending[role].popleft()
            else:
                try:
                    source, event = self.q["events"].get(timeout=POLL_S)
                except queue.Empty:
                    if self.stop.is_set():
                        self._raise_failure()
                    self._check_workers()
                    continue
                if isinstance(event, Failure):
                    raise_failure(event)
                if source != role:
                    self.pending[source].append(event)
                    continue
            if isinstance(event, kind):
                return event
            raise StageError(f"{role} stage: unexpected {type(event).__name__} while waiting for {kind.__name__}")

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

    def run(self, front: FrontJob, back: BackJob, restore: RestoreStage, progress: Callable[[int], None]) -> tuple:
        """Stream one video through all stages; returns (front stats, back stats)."""
        self.generation += 1
        self.source = front.source
        for slot in range(len(front.pool)):
            self.q["free"].put((self.generation, slot))
        self.q["front_jobs"].put((self.generation, front))
        self.q["back_jobs"].put((self.generation, back))

        def send(restored) -> None:
            with restore.timer("wait restore: back busy"):
                self._put(self.q["restored"], restored)
            progress(1)

        try:
            while True:
                with restore.timer("wait restore: no face frame"):
                    item = self._get(self.q["faces"])
                if isinstance(item, End):
                    break
                for restored in restore.push(item):
                    send(restored)
            front_stats = item.stats
            for restored in restore.finish():
                send(restored)
            self._put(self.q["restored"], End())
            back_stats = self._event("back", End).stats
        except BaseException:
            self.abort()
            raise
        return front_stats, back_stats

    def _get(self, q) -> Any:
        try:
            return self.wait.get(q)
        except Stopped:
            self._raise_failure()

    def _put(self, q, item: Any) -> None:
        try:
            self.wait.put(q, item)
        except Stopped:
            self._raise_failure()

    def close(self) -> None:
        """Let the workers finish and exit."""
        for role in self.workers:
            self.q[f"{role}_jobs"].put(None)
        self._join(timeout=10)

    def abort(self) -> None:
        """Stop every worker now (after a failure or an interrupt); the runner cannot be used again."""
        self.stop.set()
        self._join(timeout=3)
        release_queues(self.q)

    def _join(self, timeout: float) -> None:
        for worker in self.workers.values():
            worker.join(timeout)
            if worker.is_alive() and hasattr(worker, "terminate"):
                worker.terminate()
                worker.join(1)


class InlineRunner:
    """`overlap="off"`: every stage in the calling thread, one frame after another."""

    shared = False

    def __init__(self, options: PipelineOptions, size: int, *, window: int):
        self.window = window
        self.front = FrontWorker(options)
        self.back = BackWorker(options, size)
        self.info = {**self.front.info(), **self.back.info()}

    def pool_size(self, held: int) -> int:
        return held + self.window + 2

    def run(self, front: FrontJob, back: BackJob, restore: RestoreStage, progress: Callable[[int], None]) -> tuple:
        free = deque(range(len(front.pool)))

        def acquire() -> int:
            if not free:
                raise StageError("no free frame slot (pool too small)")
            return free.popleft()

        def emit(item) -> None:
            for restored in restore.push(item):
                self.back.push(restored)
                progress(1)

        self.back.begin(back, free.append)
        try:
            front_stats = self.front.run(front, acquire, emit)
            for restored in restore.finish():
                self.back.push(restored)
                progress(1)
        except BaseException:
            self.back.abort()
            raise
        return front_stats, self.back.end()

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


def build_runner(options: PipelineOptions, size: int) -> OverlappedRunner | InlineRunner:
    if options.overlap == "off":
        return InlineRunner(options, size, window=options.window)
    return OverlappedRunner(options, size, window=options.window)


def new_pool(runner: OverlappedRunner | InlineRunner, held: int, height: int, width: int) -> FramePool:
    return FramePool(runner.pool_size(held), height, width, shared=runner.shared)
