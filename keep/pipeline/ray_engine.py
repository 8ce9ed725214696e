"""A folder of videos on Ray (`--set engine=ray`): long-lived workers (Ray actors), each holding one built
`Pipeline`, restore whole videos one after another, the next video going to whichever worker is free.

    python inference.py -i videos/ -o out --set engine=ray                    # a local Ray, started for the run
    RAY_ADDRESS=HEAD:6379 python inference.py -i videos/ -o out --device cuda --set engine=ray   # one worker per GPU

The unit of work is one video: the Kalman state runs over whole tracks. The largest inputs go first, so that
a long video does not start last. A video whose worker died (killed, out of memory, its node lost) is restored
again on another worker, at most `ray_retries` times; one that fails for a reason of its own (unreadable,
corrupt: a KeepError) is reported once and not retried. The pool keeps its size: a worker that died is
replaced and, with `ray_workers=0`, workers are added as nodes join. Every output is written as the local
engine writes it (`batch.restore_one`: under its lock, a partial file moved into place, the summary last),
so a re-run skips what is finished and removes what a killed worker left. The driver (this process) appends
one line per input to OUTDIR/manifest.jsonl and prints each worker's throughput at the end.

Ray is optional (requirements-ray.txt): this module is the only one that imports it, and only when a run asks
for it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from collections import deque
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ..distributed import torchrun_place
from ..errors import KeepError
from ..image import list_images
from ..paths import check_output_outside_inputs, new_run_token, write_error
from .batch import BatchResult, prepare_process, report, restore_one, unfinished
from .inputs import Input, outputs_of
from .options import PipelineOptions
from .pipeline import Pipeline

MANIFEST = "manifest.jsonl"  # in the output folder: one JSON line per input and run
GROW_EVERY = 5.0  # seconds between looks at the cluster's nodes (workers added as nodes join)
# Passed on to the workers' processes besides the KEEP_* variables (offline mode, weights folder): idle OpenMP
# threads asleep (keep/threads.py).
FORWARDED_ENV = ("OMP_WAIT_POLICY",)


def import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise KeepError(f"--set engine=ray needs Ray ({exc}): pip install -r requirements-ray.txt") from None
    return ray


class RestoreWorker:
    """One Ray actor: a `Pipeline` built once (`start`), then whole inputs restored one at a time."""

    def __init__(self, options: PipelineOptions, threads: int | None):
        self.options, self.threads = options, threads
        self.pipeline: Pipeline | None = None

    def start(self) -> dict:
        """Ready the process and build the pipeline (load the network, start the stage workers): where this
        worker runs and the seconds the build took; {"error": ...} when it cannot (missing weights, device)."""
        import ray

        begun = time.perf_counter()
        try:
            prepare_process(self.options, self.threads)
            self.pipeline = Pipeline(self.options)
            self.pipeline.build()
        except KeepError as exc:
            return {"error": str(exc)}
        node = ray.util.get_node_ip_address()
        return {"node": node, "pid": os.getpid(), "build_seconds": time.perf_counter() - begun}

    def restore(self, item: Input, outdir: str, wait: bool) -> dict:
        """`batch.restore_one` on this worker: {"status": done | skipped | busy | failed, "summary", "error"}."""
        out = outputs_of(item, Path(outdir), self.options.container)
        try:
            status, summary = restore_one(self.pipeline, item, out, self.options, wait=wait, progress=False)
        except KeepError as exc:
            return {"status": "failed", "error": str(exc)}
        return {"status": status, "summary": summary}

    def close(self) -> None:
        if self.pipeline is not None:
            self.pipeline.close()


@dataclass
class Task:
    item: Input
    attempts: int = 0  # times a worker restored it, failed on it or died on it
    wait: bool = False  # another run holds its output's lock: wait for it
    lost: list[str] = field(default_factory=list)  # workers that died restoring it


@dataclass
class Worker:
    name: str
    handle: Any
    created: float
    info: dict = field(default_factory=dict)  # node, pid, build_seconds, ready_seconds
    task: Task | None = None
    dispatched: float = 0.0
    videos: int = 0
    frames: int = 0
    restoring: float = 0.0  # the summaries' seconds
    busy: float = 0.0  # from handing a video out to its result, on the driver
    lost: str | None = None  # the input it was restoring when it died


def restore_on_ray(
    items: list[Input],
    outdir: Path,
    options: PipelineOptions,
    *,
    folder: Path | None = None,
    keep_going: bool = True,
    progress: bool = True,
    threads: int | None = None,
) -> BatchResult:
    """`batch.restore_inputs` on Ray workers (outputs checked and the output folder made by the caller)."""
    if torchrun_place().active:
        raise KeepError("--set engine=ray runs from one process (Ray places the workers): start it with python")
    ray = import_ray()
    manifest = Manifest(outdir / MANIFEST)
    check_output_outside_inputs(manifest.path, [item.source for item in items] + [folder])
    todo, finished, refused = unfinished(items, outdir, options)
    if refused and not keep_going:
        raise KeepError(refused[0][1])  # one input: before any worker starts
    result = BatchResult(skipped=[output for _, output in finished])
    for item, output in finished:
        manifest.add(item, output, "skipped", attempts=0)
    for item, message in refused:  # a file this program did not write is in the way: not retried
        print(f"error: {item.source}: {message}", file=sys.stderr, flush=True)
        manifest.add(item, str(outputs_of(item, outdir, options.container).main), "failed", attempts=0, error=message)
        result.failed.append((str(item.source), message))
    if not todo:
        return result
    begun = time.perf_counter()
    where = connect(ray, options)
    try:
        # a cluster's workers get this process's settings (KEEP_*, the checkout on the path) through Ray's runtime
        # environment (which starts fresh worker processes: seconds); a local Ray's inherited them
        env = None if where == "a local Ray" else {"env_vars": worker_environment()}
        scheduler = Scheduler(ray, todo, outdir, options, threads, env, manifest, result, keep_going, progress)
        scheduler.run()
    finally:
        if where != "the caller's Ray":
            ray.shutdown()
    print_throughput(scheduler.workers, len(todo), time.perf_counter() - begun, where)
    return result


def connect(ray: Any, options: PipelineOptions) -> str:
    """Join the cluster at `ray_address` (or $RAY_ADDRESS), or start a local Ray (this run leaves it at the
    end); a caller that initialised Ray itself keeps its own. Returns which, in words."""
    if ray.is_initialized():
        return "the caller's Ray"
    address = options.ray_address or os.environ.get("RAY_ADDRESS") or None
    logging.getLogger("ray._private.authentication.authentication_token_setup").addFilter(_quiet)
    # a local Ray's processes inherit this environment, so its workers need nothing more; offline first, a Ray
    # of our own reports no usage statistics. Put back afterwards (what Ray itself sets stays).
    ours = {**worker_environment(), "RAY_USAGE_STATS_ENABLED": os.environ.get("RAY_USAGE_STATS_ENABLED", "0")}
    saved = {name: os.environ.get(name) for name in ours} if address is None else {}
    os.environ.update({name: ours[name] for name in saved})
    try:
        if address is not None:
            check_reachable(address)
        ray.init(address=address, include_dashboard=False if address is None else None, logging_level=logging.WARNING)
    except Exception as exc:  # Ray's errors share no base class: one line whatever the cause
        raise KeepError(f"cannot start or reach Ray{f' at {address}' if address else ''}: {exc}") from None
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return f"the Ray cluster at {address}" if address else "a local Ray"


def check_reachable(address: str, timeout: float = 10.0) -> None:
    """OSError unless a cluster's HOST:PORT accepts connections (Ray itself retries for minutes); other forms
    (`auto`, `local`, `ray://...`) are left to Ray."""
    host, _, port = address.rpartition(":")
    if host and port.isdigit() and "://" not in address:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass


def _quiet(record: logging.LogRecord) -> bool:
    """Ray's notice that the token authentication it turned on for a local Ray is on: not the user's concern."""
    return not record.getMessage().startswith("Token authentication is enabled")


def worker_device(options: PipelineOptions, nodes: list[dict]) -> str:
    """The device the workers use: `auto` is CUDA when the cluster has GPUs; a CUDA device is whichever GPU Ray
    gives each worker (`cuda`; Ray sets CUDA_VISIBLE_DEVICES)."""
    gpus = sum(node["Resources"].get("GPU", 0) for node in nodes if node.get("Alive", True))
    device = str(options.device)
    if device == "auto":
        return "cuda" if gpus else "cpu"
    if device.startswith("cuda"):
        if not gpus:
            raise KeepError(f"--device {device}: the Ray cluster has no GPU")
        return "cuda"
    return device


def workers_wanted(nodes: list[dict], options: PipelineOptions, work: int) -> int:
    """How many workers the cluster's live nodes hold (`ray_workers`, else one per `ray_gpus` GPUs with a CUDA
    device, one per `ray_cpus` cores otherwise), never more than `work` (videos waiting or being restored)."""
    resource, need = ("GPU", options.ray_gpus) if options.device == "cuda" else ("CPU", options.ray_cpus)
    fits = sum(int(node["Resources"].get(resource, 0) / need + 1e-9) for node in nodes if node.get("Alive", True))
    if fits == 0 and not options.ray_workers:
        unit = "GPU" if resource == "GPU" else "CPU cores"
        raise KeepError(f"no node of the Ray cluster has {need:g} {unit} for a worker (--set ray_{resource.lower()}s)")
    return max(0, min(options.ray_workers or fits, work))


class Scheduler:
    """Hands the videos to the workers, the next one to whichever is free, and keeps the pool at its size."""

    def __init__(
        self, ray: Any, todo: list[Input], outdir: Path, options: PipelineOptions, threads: int | None,
        env: dict | None, manifest: Manifest, result: BatchResult, keep_going: bool, progress: bool,
    ):  # fmt: skip
        self.ray, self.outdir, self.manifest, self.result = ray, outdir, manifest, result
        self.keep_going, self.threads = keep_going, threads
        nodes = ray.nodes()
        self.options = replace(options, device=worker_device(options, nodes))
        self.queue = deque(Task(item) for item in sorted(todo, key=input_size, reverse=True))
        self.workers: list[Worker] = []  # every worker started, the lost ones too
        self.pending: dict[Any, Worker] = {}  # a start or restore call not yet answered -> its worker
        self.failed_starts, self.looked, self.size = 0, 0.0, 0
        self.bar = tqdm(total=len(todo), unit="video", desc="videos", disable=None if progress else True)
        gpu = self.options.device == "cuda"
        self.actor = ray.remote(RestoreWorker).options(
            num_cpus=1 if gpu else self.options.ray_cpus, num_gpus=self.options.ray_gpus if gpu else 0,
            max_restarts=0, max_task_retries=0, runtime_env=env,
        )  # fmt: skip

    def run(self) -> None:
        try:
            while self.queue or any(w.task for w in self.workers):
                self.grow()
                for worker in self.workers:
                    if worker.info and worker.lost is None and worker.task is None and self.queue:
                        self.dispatch(worker, self.queue.popleft())
                if not self.pending:
                    raise RuntimeError("no Ray worker is starting or restoring while videos wait")
                ready, _ = self.ray.wait(list(self.pending), num_returns=1, timeout=GROW_EVERY)
                for ref in ready:
                    self.answer(ref, self.pending.pop(ref))
        finally:
            self.bar.close()
            self.close()

    def grow(self) -> None:
        """Start workers up to the pool's size (replacing lost ones, adding some as nodes join)."""
        alive = [w for w in self.workers if w.lost is None]
        if self.looked and time.monotonic() - self.looked < GROW_EVERY and len(alive) >= self.size:
            return
        self.looked = time.monotonic()
        self.size = workers_wanted(self.ray.nodes(), self.options, len(self.queue) + sum(bool(w.task) for w in alive))
        for _ in range(self.size - len(alive)):
            worker = Worker(f"w{len(self.workers)}", self.actor.remote(self.options, self.threads), time.perf_counter())
            self.workers.append(worker)
            self.pending[worker.handle.start.remote()] = worker

    def dispatch(self, worker: Worker, task: Task) -> None:
        worker.task, worker.dispatched = task, time.perf_counter()
        self.pending[worker.handle.restore.remote(task.item, str(self.outdir), task.wait)] = worker

    def answer(self, ref: Any, worker: Worker) -> None:
        """Take the answer of a worker's start or restore call (or learn that the worker died)."""
        try:
            answer = self.ray.get(ref)
        except self.ray.exceptions.RayActorError as exc:
            return self.lost(worker, exc)
        except self.ray.exceptions.RayTaskError as exc:  # a bug in the worker, not the input: as in one process
            raise exc.cause or exc from None
        if worker.task is None:  # its start
            if "error" in answer:
                raise KeepError(answer["error"])
            worker.info = {**answer, "ready_seconds": time.perf_counter() - worker.created}
            return None
        task, worker.task = worker.task, None
        worker.busy += time.perf_counter() - worker.dispatched
        if answer["status"] == "busy":  # another run writes it: put it off, then wait for that run
            task.wait = True
            self.queue.append(task)
            return None
        task.attempts += 1
        self.finish(task, worker, answer)
        return None

    def finish(self, task: Task, worker: Worker | None, answer: dict) -> None:
        item, status = task.item, answer["status"]
        out = str(outputs_of(item, self.outdir, self.options.container).main)
        summary = answer.get("summary") or {}
        name = worker.name if worker else None
        info = worker.info if worker else {}
        self.manifest.add(
            item, out, status, attempts=task.attempts, worker=name, node=info.get("node"), pid=info.get("pid"),
            frames=summary.get("frames"), seconds=summary.get("seconds"), error=answer.get("error"), lost=task.lost,
        )  # fmt: skip
        self.bar.update(1)
        if status == "done":
            worker.videos, worker.frames = worker.videos + 1, worker.frames + summary["frames"]
            worker.restoring += summary["seconds"]
            self.result.done.append(summary)
            report(summary)
        elif status == "skipped":
            self.result.skipped.append(out)
        else:
            if not self.keep_going:
                raise KeepError(answer["error"])
            print(f"error: {item.source}: {answer['error']}", file=sys.stderr, flush=True)
            self.result.failed.append((str(item.source), answer["error"]))

    def lost(self, worker: Worker, exc: Exception) -> None:
        """A worker died (killed, out of memory, node lost): its video goes to another, a bounded number of times."""
        task, worker.task = worker.task, None
        worker.lost = task.item.source.name if task else ""  # "": died while starting
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if task is None:  # died while starting
            self.failed_starts += 1
            if self.failed_starts > self.options.ray_retries + self.size:
                raise KeepError(f"Ray workers die as they start: {reason}")
            return
        task.attempts += 1
        task.lost.append(worker.name)
        if task.attempts <= self.options.ray_retries:
            again = f"restoring it again (attempt {task.attempts + 1} of {self.options.ray_retries + 1})"
            print(f"warning: Ray worker {worker.name} died restoring {task.item.source} ({reason}); {again}",
                  file=sys.stderr, flush=True)  # fmt: skip
            self.queue.appendleft(task)
            return
        message = f"its Ray worker died {task.attempts} times (last: {reason})"
        self.finish(task, None, {"status": "failed", "error": message})

    def close(self) -> None:
        """Stop every live worker: its pipeline closed (a few seconds at most), then the actor ended."""
        live = [w for w in self.workers if w.lost is None]
        idle = [w.handle.close.remote() for w in live if w.info and w.task is None]
        if idle:
            self.ray.wait(idle, num_returns=len(idle), timeout=10)
        for worker in live:
            self.ray.kill(worker.handle, no_restart=True)


def worker_environment() -> dict[str, str]:
    """What the workers' processes add to the cluster's environment: this checkout on the import path (a node
    where the project is installed finds it anyway), the project's KEEP_* variables, the OpenMP wait policy."""
    root = str(Path(__file__).resolve().parents[2])
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    env.update({k: v for k, v in os.environ.items() if k.startswith("KEEP_") or k in FORWARDED_ENV})
    return env


def input_size(item: Input) -> int:
    """Bytes of an input (a frames folder: of its images): the proxy for its length that orders the queue."""
    try:
        paths = list_images(item.source) if item.kind == "frames" else [item.source]
        return sum(path.stat().st_size for path in paths)
    except OSError:
        return 0


class Manifest:
    """OUTDIR/manifest.jsonl: one JSON line per input and run (input, output, status, attempts, worker, node,
    pid, frames, seconds, error, lost), appended with one write of a whole line, so that runs sharing the
    folder never interleave within a line, and a driver killed midway leaves every finished line readable."""

    def __init__(self, path: Path):
        self.path, self.run = path, new_run_token()

    def add(self, item: Input, output: str, status: str, *, attempts: int, **fields: Any) -> None:
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        record = {"run": self.run, "time": now, "input": str(item.source), "output": output, "status": status,
                  "attempts": attempts, **fields}  # fmt: skip
        line = (json.dumps(record) + "\n").encode()
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)
        except OSError as exc:
            raise write_error(self.path, exc) from None


def print_throughput(workers: list[Worker], videos: int, seconds: float, where: str) -> None:
    """The run's last lines: the videos and the wall time, then each worker's share, speed and costs."""
    print(f"ray: {videos} videos on {len(workers)} workers of {where} in {seconds:.1f} s", flush=True)
    for w in workers:
        info = w.info
        place = f"{info['node']} pid {info['pid']}" if info else "never started"
        speed = f"{w.frames / w.restoring:.2f} frames/s" if w.restoring else "-"
        overhead = f"; {(w.busy - w.restoring) / w.videos:.2f} s per video beyond restoring" if w.videos else ""
        ready = f"; ready in {info['ready_seconds']:.1f} s (build {info['build_seconds']:.1f} s)" if info else ""
        lost = "" if w.lost is None else f"; died restoring {w.lost}" if w.lost else "; died starting"
        print(f"  {w.name} ({place}): {w.videos} videos, {w.frames} frames in {w.restoring:.1f} s ({speed})"
              f"{overhead}{ready}{lost}", flush=True)  # fmt: skip
