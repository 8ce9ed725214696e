"""How a stage worker lives and ends, in a process or a thread (`keep.pipeline.runner` runs the stages in it).

A run that fails anywhere ends with one error and no hang: a waiting worker gives up when the
shared stop flag is set (`Waiter`), a worker process exits when its main process is gone
(`exit_with_parent`) without flushing queues nobody reads (`release_queues`), the names of the semaphores
are removed once every process holds them (`unlink_semaphores`), and a worker killed from outside is
named in one line (`worker_lost`).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import KeepError
from .items import Failure, StageError

POLL_S = 0.1  # how often a waiting stage checks whether the run is being stopped
EXIT_ORPHANED = 3  # a worker's exit status when its main process ended first
WORKER_NICENESS = 10  # CPU network: the worker processes yield the cores to the restore stage


class Stopped(Exception):
    """Raised inside a waiting stage when another stage has failed."""


class Waiter:
    """Blocking queue operations that give up when `stop` is set or a peer is gone (`check` raises)."""

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


def process_context():
    """The multiprocessing context of the worker processes: forked from a server process that imported the
    pipeline once (multiprocessing's forkserver), where the platform has one, else spawned.

    A spawned worker imports torch and the project again (about 3 s of CPU each, at every start and every
    restart after a failure or a cancel); a forked one starts in milliseconds. The server starts here, at
    once, so that its imports overlap the caller's model loading, and with SIGTERM blocked: a SIGTERM to the
    whole process group (systemd, Slurm) must leave the stopping to the main process, and a server it ended
    would make every worker look gone (multiprocessing learns their ends from the server)."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    from multiprocessing import forkserver, resource_tracker

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["keep.pipeline"])  # not the caller's script: each worker imports it, as spawned
    resource_tracker.ensure_running()  # first: starting it unblocks SIGTERM, which the server must inherit blocked
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # inherited through fork and exec
    try:
        forkserver.ensure_running()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    return context


def worker_niceness(device: str) -> int:
    """How much lower the worker processes' CPU priority is than the main process's.

    With the network on the CPU the restore stage is the critical path (the slowest stage, and every
    frame waits for it), so when the cores are contended the workers should give way to it: on the
    2-core benchmark (200 frames, tiny preset) the restore stage then ran at its full speed (13.4 s of
    work in 13.4 s, against 16.4 s when it shared the cores equally) and the clip took 17.8 s instead of
    19.5 s. With the network on a GPU the workers' CPU stages may be the slowest: equal priority."""
    return WORKER_NICENESS if device == "cpu" else 0


@dataclass(frozen=True)
class WorkerSettings:
    """What a worker process sets up before it builds its stages (threads: nothing, they share the process's)."""

    child: bool  # a process rather than a thread
    log_level: int
    threads: int  # torch's and OpenCV's, as the main process (keep.threads.set_threads)
    niceness: int  # worker_niceness
    reuse_memory: bool  # as the main process on CPU: RetinaFace at 1080p 48-53 -> 26-35 ms/frame (docs/inference.md)

    def apply(self) -> None:
        import cv2
        import torch

        exit_with_parent()
        # The main process handles Ctrl-C and SIGTERM (which a process manager may send to every process of the
        # job at once) and stops the workers itself, after which it removes the partial output.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})  # blocked in the fork server: ignored now
        logging.basicConfig(level=self.log_level, format="%(message)s", stream=sys.stderr)
        torch.set_num_threads(self.threads)
        cv2.setNumThreads(self.threads)  # warps, blends, resizes
        if self.niceness and hasattr(os, "nice"):
            os.nice(self.niceness)
        if self.reuse_memory:
            from ..precision import reuse_freed_memory

            reuse_freed_memory()


def exit_with_parent() -> None:
    """In a worker process: exit as soon as the main process is gone, whatever the worker is doing.

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


def release_queues(q: dict, keep: tuple[str, ...] = ()) -> None:
    """Let this process exit without flushing what it put on process queues nobody reads any more.

    A `multiprocessing.Queue` hands items to a feeder thread, and the process's exit waits for that
    thread to write them into the pipe; when the reader is gone (a stopped stage) the write never ends
    and neither does the process (which would print its `error:` line, then hang). Thread queues need nothing."""
    for name, item in q.items():
        if name not in keep and hasattr(item, "cancel_join_thread"):
            item.cancel_join_thread()
            item.close()


def worker_lost(role: str, worker, shared: bool, *, started: bool, source) -> Exception:
    """The error for a stage worker that ended without a word: killed from outside (the out-of-memory killer's
    SIGKILL, a SIGTERM) is a KeepError naming the signal and the input; anything else is a bug."""
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
    uses them has opened them.

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
    """A worker's Failure as the main process's exception: a KeepError for bad input, else a StageError."""
    if os.environ.get("KEEP_DEBUG") and failure.traceback:
        print(failure.traceback, file=sys.stderr)
    if failure.user_error:
        raise KeepError(failure.message)
    raise StageError(f"{failure.stage} stage: {failure.message}")
