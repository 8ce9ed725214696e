"""What the benchmarks share: their flags, the machine they ran on, timing and memory, the generated
two-person clip, the golden case, and the lab's own variants of the network's runtime.

The variants here are measured, not shipped: the per-frame step through `torch.compile`
(`CompiledRestorer`), group norm in float32 under CUDA autocast as before `keep.archs.blocks.GroupNorm`
kept it in half precision (`group_norm_in_float32`), and the channels-last layout (`to_channels_last`).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import resource
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import av
import cv2
import numpy as np
import torch

from keep.archs.blocks import GroupNorm
from keep.cli import add_device_argument, add_threads_argument
from keep.cuda_graphs import GraphedStep
from keep.errors import KeepError
from keep.restorer import Restorer
from keep.threads import cpu_cores
from keep.video import open_input

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "assets" / "carphone_sample.mp4"
GOLDEN = REPO.parent / "shared" / "golden"  # the golden case beside the repository (tests/conftest.py)
T = TypeVar("T")


# ------------------------------------------------------------------------------------------- flags
def parser(command: str, doc: str) -> argparse.ArgumentParser:
    """The parser of `python -m benchmarks COMMAND`: its docstring's first paragraph as description."""
    return argparse.ArgumentParser(prog=f"python -m benchmarks {command}", description=doc.split("\n\n")[0])


def add_common_arguments(p: argparse.ArgumentParser, *, device: bool = True) -> None:
    """`--device` (default cpu: a benchmark says where it runs), `--threads` and `--json`."""
    if device:
        add_device_argument(p, default="cpu")
    add_threads_argument(p)
    p.add_argument("--json", type=Path, default=None, help="also write the figures to this file")


def at_least_one(args: argparse.Namespace, *names: str) -> None:
    """KeepError naming the options among `names` that are below 1."""
    low = [f"--{name}" for name in names if getattr(args, name) < 1]
    if low:
        raise KeepError(f"{', '.join(low)} must be >= 1")


def frame_size(text: str, option: str = "--size") -> tuple[int, int]:
    """`WIDTHxHEIGHT` -> (width, height); KeepError otherwise."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise KeepError(f"{option} must be WIDTHxHEIGHT (e.g. 1920x1080), got '{text}'") from None
    if width < 1 or height < 1:
        raise KeepError(f"{option} must be WIDTHxHEIGHT with both >= 1, got '{text}'")
    return width, height


def write_json(path: Path | None, figures: Any) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(figures, indent=2) + "\n")


# ------------------------------------------------------------------------------------------- machine
def cpu_name() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()


def load_average() -> tuple[float, float, float] | None:
    return os.getloadavg() if hasattr(os, "getloadavg") else None


def machine(threads: int) -> str:
    """One line: the cores, the torch threads and the load beside the run (shared machines)."""
    load = load_average()
    return f"{cpu_cores()} CPU cores, {threads} torch threads, load average {load[0] if load else float('nan'):.1f}"


# ------------------------------------------------------------------------------------------- timing, memory
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fastest(run: Callable[[], T], repeats: int) -> tuple[T, float]:
    """`run()` `repeats` times: the last result and the fastest run's seconds (the one other work on a shared
    machine disturbed least). `run` returns once its work is done (host arrays, or synchronised)."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - start)
    return result, best


def peak_memory_mib(device: torch.device) -> float:
    """Peak so far: CUDA allocator peak since the last reset, or this process's peak RSS (CPU)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / (2**20 if sys.platform == "darwin" else 2**10)


def peak_rss_mib(pid: int | str) -> float:
    """Peak resident memory (VmHWM) of any process of ours, from Linux /proc (0 where unknown)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


# ------------------------------------------------------------------------------------------- inputs
def two_person_frame(sources: list[np.ndarray], t: int, width: int, height: int) -> np.ndarray:
    """Frame t of the two-person clip: two crops of the sample (its frames t and t + 37, two people as far as
    a detector can tell), each scaled to the height, side by side."""
    half, parts = width // 2, []
    for offset in (0, 37):
        src = sources[(t + offset) % len(sources)]
        scaled = cv2.resize(src, (round(src.shape[1] * height / src.shape[0]), height), interpolation=cv2.INTER_CUBIC)
        left = (scaled.shape[1] - half) // 2
        parts.append(scaled[:, left : left + half])
    return np.concatenate(parts, axis=1)


def sample_frames() -> list[np.ndarray]:
    return [f.rgb for f in open_input(SAMPLE)]


def two_person_frames(count: int, width: int, height: int) -> list[np.ndarray]:
    sources = sample_frames()
    return [two_person_frame(sources, t, width, height) for t in range(count)]


def write_two_person_clip(path: Path, frames: int, width: int = 960, height: int = 540, *, crf: int = 18) -> Path:
    """The two-person clip as H.264 at 25 fps, one frame at a time (long clips stay small in memory)."""
    sources = sample_frames()
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast"}
        for t in range(frames):
            frame = av.VideoFrame.from_ndarray(two_person_frame(sources, t, width, height), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def load_golden() -> tuple[dict, dict[str, np.ndarray]]:
    """The golden case: the released-layout stand-in weights and case A's frames, flows and codes."""
    if not (GOLDEN / "make_weights.py").is_file():
        raise KeepError(f"--weights golden needs the golden case in {GOLDEN} (not found)")
    spec = importlib.util.spec_from_file_location("make_weights", GOLDEN / "make_weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    state = module.official_state_dict(GOLDEN / "keep_v010_manifest.json")
    case = np.load(GOLDEN / "keep_v010_case_a.npz")
    return state, {k: case[k] for k in case.files}


# ------------------------------------------------------------------------------------------- lab variants
class CompiledRestorer(Restorer):
    """A `Restorer` whose per-frame step runs through `torch.compile(backend)`, inside the CUDA graphs on a
    GPU (the graphs then replay the compiled kernels). `fullgraph`: a graph break is an error, not a step
    split into pieces run from Python again. Inductor fuses norm / activation chains, so values move
    within the precision's rounding; dynamo's `eager` backend traces the step and runs it op by op."""

    def __init__(self, *args, backend: str = "inductor", **kwargs):
        super().__init__(*args, **kwargs)
        self.compiled = torch.compile(self.network.step, backend=backend, fullgraph=True, dynamic=False)
        self._compiled_graphs: GraphedStep | None = None

    def frame_step(self):
        if not (self.cuda_graphs and self.device.type == "cuda"):
            return self.compiled
        if self._compiled_graphs is None:
            self._compiled_graphs = GraphedStep(self.network, step=self.compiled)
        return self._compiled_graphs


def make_restorer(network, flow=None, *, backend: str | None = None, **settings) -> Restorer:
    """A `Restorer`, or with a `torch.compile` backend a `CompiledRestorer`."""
    if backend is None:
        return Restorer(network, flow, **settings)
    return CompiledRestorer(network, flow, backend=backend, **settings)


@contextlib.contextmanager
def group_norm_in_float32() -> Iterator[None]:
    """For the duration, every group norm of the network computes as `nn.GroupNorm` does, so that under CUDA
    autocast it runs in float32 (autocast's choice): the path that `GroupNorm`'s half-precision norm
    replaced, to measure what it changed."""
    forward = GroupNorm.forward
    GroupNorm.forward = torch.nn.GroupNorm.forward
    try:
        yield
    finally:
        GroupNorm.forward = forward


def to_channels_last(network: torch.nn.Module) -> torch.nn.Module:
    """Every 4-D weight in the channels-last (NHWC) layout, in place. Convolutions then produce channels-last
    activations, which oneDNN and cuDNN run without layout reorders. Values are untouched but round
    differently: same codes on the golden case, the output within 2e-3 (docs/speed.md); still trainable."""
    return network.to(memory_format=torch.channels_last)
