"""Where the network's time goes: `torch.profiler` around one window of what `benchmarks speed` times.

    python -m benchmarks profile --device cuda --precision fp16 --batch 4 --out results/profile_fp16
    python -m benchmarks profile --weights preset:tiny --window 2 --out /tmp/profile    # CPU, seconds

Builds the model and its inputs as `python -m benchmarks speed` does, from the same options (`--weights`
random: the released configuration with random weights, `--precision`, `--batch`, `--window`,
`--flow`, `--compile`, ...), restores two windows unprofiled (allocator, cuDNN's algorithm search, CUDA
graph capture, compilation), then profiles the next window, which continues them (every frame of it
has a prediction, as in a long video). Prints, and writes to `--out`:
- `profile.md`: the window's wall time and, on a GPU, the share of it the GPU was busy; the time by
  part of the network (encoders, gain, transformer, decoder, CFT, CFA, flow) and by kind of operator
  (convolution, group norm, attention, ...); the top operators by self time and, on a GPU, the top
  kernels;
- `trace.json.gz`: the Chrome trace of the window (ui.perfetto.dev or chrome://tracing read it).
CUDA graphs are off by default here: each kernel is then attributed to the operator and the part of
the network that launched it. `--cuda_graphs` profiles the replays as a whole instead (what the
benchmark times): operators and parts are not seen inside a replay, only what the profiler records of
its kernels. Times under the profiler are slower than the benchmark's; the shares are what count.
"""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
from torch.autograd import DeviceType

from keep.devices import resolve_device
from keep.threads import set_threads

from . import speed
from .common import at_least_one, device_name, group_norm_in_float32, load_golden, parser

# Kind of work of an operator, from its name: first pattern that matches (self times are summed by kind).
KINDS = (
    ("convolution", r"conv"),
    ("group norm", r"group_norm"),
    ("layer norm", r"layer_norm"),
    ("attention", r"attention"),
    ("matrix product", r"^aten::(mm|addmm|bmm|baddbmm|matmul|linear)$"),
    ("copy / cast", r"^aten::(copy_|_to_copy|to|clone|contiguous|cat|stack|index|_unsafe_view|reshape)$"),
    ("elementwise", r"^aten::(silu|gelu|sigmoid|leaky_relu|add|sub|rsub|mul|div|clamp|exp|neg|fill)_?$"),
    ("resampling", r"grid_sampler|upsample|interpolate|constant_pad|pad"),
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = parser("profile", __doc__)
    speed.add_run_arguments(p, cuda_graphs=False)  # eager: each kernel attributed to its operator
    p.add_argument("--top", type=int, default=25, help="rows of the operator and kernel tables")
    p.add_argument("--out", type=Path, default=Path("results/profile"), help="folder for profile.md and the trace")
    p.add_argument("--no_trace", dest="trace", action="store_false", help="no trace.json.gz")
    args = p.parse_args(argv)
    speed.check_run_arguments(args)
    at_least_one(args, "top")
    return args


# ------------------------------------------------------------------------------------------- parts
def parts(network) -> Iterator[tuple[str, torch.nn.Module]]:
    """(name, module) of the parts of KEEP whose time the profile reports; the decoder's blocks one by
    one, as `KEEP.decode` calls them (CFT and CFA run between them)."""
    yield "LQ encoder", network.lq_encoder
    yield "HQ encoder (prediction)", network.hq_encoder
    yield "Kalman gain", network.kalman
    yield "code transformer", network.transformer
    for block in network.decoder.blocks:
        yield "decoder", block
    for module in network.cft.values():
        yield "CFT", module
    for module in network.cfa.values():
        yield "CFA", module


@contextmanager
def labelled(network, flow) -> Iterator[object]:
    """Each part's calls inside a `record_function` range named after it (its total time is then in the
    profile), and the flow estimator's too; yields the flow estimator to use in place of `flow`."""
    handles = []
    for name, module in parts(network):
        open_ranges: list = []

        def enter(_module, _inputs, name=f"part: {name}", open_ranges=open_ranges):
            open_ranges.append(torch.profiler.record_function(name))
            open_ranges[-1].__enter__()

        def leave(_module, _inputs, _output, open_ranges=open_ranges):
            open_ranges.pop().__exit__(None, None, None)

        handles += [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]

    def labelled_flow(target: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        with torch.profiler.record_function("part: flow"):
            return flow(target, source)

    try:
        yield None if flow is None else labelled_flow
    finally:
        for handle in handles:
            handle.remove()


# ------------------------------------------------------------------------------------------- tables
def device_time(event) -> float:
    """Self time on the device in µs (`self_device_time_total`; `self_cuda_time_total` before torch 2.4)."""
    return getattr(event, "self_device_time_total", None) or getattr(event, "self_cuda_time_total", 0)


def total_time(event, on_gpu: bool) -> float:
    if on_gpu:
        return getattr(event, "device_time_total", None) or getattr(event, "cuda_time_total", 0)
    return event.cpu_time_total


def kind_of(name: str) -> str:
    return next((kind for kind, pattern in KINDS if re.search(pattern, name)), "other")


def summarise(events, *, on_gpu: bool, wall_s: float, top: int) -> dict:
    """The profile's figures from `prof.key_averages()`: self time per operator (device time on a GPU,
    CPU time on a CPU), per kind, per part of the network, and on a GPU per kernel. Times in ms."""
    kernels = [e for e in events if e.device_type != DeviceType.CPU]
    operators = [e for e in events if e.device_type == DeviceType.CPU and not e.key.startswith("part: ")]
    self_time = (lambda e: device_time(e)) if on_gpu else (lambda e: e.self_cpu_time_total)
    busy_us = sum(device_time(e) for e in kernels) if on_gpu else sum(self_time(e) for e in operators)
    by_kind: dict[str, float] = {}
    for event in operators:
        by_kind[kind_of(event.key)] = by_kind.get(kind_of(event.key), 0.0) + self_time(event) / 1e3
    by_part = {e.key.removeprefix("part: "): total_time(e, on_gpu) / 1e3 for e in events if e.key.startswith("part: ")}
    row = lambda e: {"name": e.key, "calls": e.count, "ms": self_time(e) / 1e3}  # noqa: E731
    ranked = sorted((e for e in operators if self_time(e) > 0), key=self_time, reverse=True)
    summary = {
        "wall_ms": wall_s * 1e3,
        "busy_ms": busy_us / 1e3,  # GPU: kernel time; CPU: operator self time
        "by_kind": dict(sorted(by_kind.items(), key=lambda kv: -kv[1])),
        "by_part": dict(sorted(by_part.items(), key=lambda kv: -kv[1])),
        "operators": [row(e) for e in ranked[:top]],
    }
    if on_gpu:
        ranked_kernels = sorted(kernels, key=device_time, reverse=True)[:top]
        summary["kernels"] = [{"name": e.key, "calls": e.count, "ms": device_time(e) / 1e3} for e in ranked_kernels]
    return summary


def markdown(summary: dict, title: str, on_gpu: bool) -> str:
    """The summary as the markdown of profile.md: shares of the busy time, except the parts' on a CPU
    (their time is the wall time of their calls, Python between the operators included)."""
    what = "GPU kernel time" if on_gpu else "CPU operator self time"
    lines = [f"# {title}", "", f"Window: {summary['wall_ms']:.1f} ms wall, {summary['busy_ms']:.1f} ms {what}"]
    if on_gpu:
        lines[-1] += f" (GPU busy {100 * summary['busy_ms'] / summary['wall_ms']:.0f}% of the wall time)"

    def table(header: str, rows: list[tuple[str, str, float]], of: str = "busy_ms") -> None:
        lines.extend(["", f"| {header} | calls | ms | share |", "| --- | --- | --- | --- |"])
        for name, calls, ms in rows:
            cell = name if len(name) <= 90 else name[:87] + "..."
            share = 100 * ms / (summary[of] or 1.0)
            lines.append(f"| `{cell.replace('|', '/')}` | {calls} | {ms:.2f} | {share:.1f}% |")

    parts = [(k, "", v) for k, v in summary["by_part"].items()]
    if not parts:
        lines += ["", "Parts of the network not labelled: with --compile, hooks would break the step's graph."]
    elif on_gpu:
        table("part of the network (GPU time of its kernels)", parts)
    else:
        table("part of the network (wall time of its calls; share of the window)", parts, of="wall_ms")
    table("kind of operator (self time)", [(k, "", v) for k, v in summary["by_kind"].items()])
    table("operator (self time)", [(r["name"], str(r["calls"]), r["ms"]) for r in summary["operators"]])
    if "kernels" in summary:
        table("kernel", [(r["name"], str(r["calls"]), r["ms"]) for r in summary["kernels"]])
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------- run
def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    device = resolve_device(args.device)
    args.device = str(device)
    set_threads(args.threads)
    with group_norm_in_float32() if args.group_norm_fp32 else nullcontext():
        return profile(args, device)


def profile(args: argparse.Namespace, device: torch.device) -> dict:
    golden_state, golden_case = load_golden() if args.weights == "golden" else (None, None)
    model = speed.build_model(args, golden_state)
    # two windows to warm up (a stream's first window and one that continues a state: with --compile
    # each is compiled for its own input layouts), then the third profiled
    args.frames = 3 * args.window
    frames, flows = speed.make_inputs(args, model.config.img_size, golden_case)
    on_gpu = device.type == "cuda"
    activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if on_gpu else [])
    profiler = torch.profiler.profile(activities=activities)
    clock: dict[str, float] = {}

    def between_windows(done: int) -> None:  # after each window (the device synchronised)
        if done == 2 * args.window:
            profiler.start()
            clock["start"] = time.perf_counter()
        elif done == 3 * args.window:
            clock["wall"] = time.perf_counter() - clock["start"]
            profiler.stop()

    # labels only where the step runs eagerly: hooks inside a compiled step would break its graph
    labels = labelled(model.network, model.flow) if args.compile is None else nullcontext(model.flow)
    with labels as flow:
        model.flow = flow
        speed.stream(model, frames, flows, args, device, on_window=between_windows)
    summary = summarise(profiler.key_averages(), on_gpu=on_gpu, wall_s=clock["wall"], top=args.top)
    name = device_name(device)
    graphs = "CUDA graphs (replays profiled whole)" if args.cuda_graphs and on_gpu else "eager"
    title = (
        f"KEEP {args.weights} weights, {args.precision}, batch {args.batch}, window {args.window}, "
        f"flow {args.flow or 'given'}, {graphs}{', compiled' if args.compile else ''} on {device} ({name})"
    )
    summary |= {"title": title, "faces_per_s_profiled": args.window * args.batch / clock["wall"]}
    args.out.mkdir(parents=True, exist_ok=True)
    text = markdown(summary, title, on_gpu)
    (args.out / "profile.md").write_text(text)
    if args.trace:
        profiler.export_chrome_trace(str(args.out / "trace.json.gz"))
    print(text, end="")
    print(f"\nwritten: {args.out / 'profile.md'}" + (f", {args.out / 'trace.json.gz'}" if args.trace else ""))
    return summary
