"""Speed, peak memory and reduced-precision code agreement of the KEEP network (docs/speed.md).

Restores `--frames` synthetic aligned faces (`--batch` faces side by side, one stream each) through
`keep.streaming.StreamingRestorer` (window `--window`, carry mode) `--repeats` times and prints
frames/s, s/frame (min and median over the repeats), the process CPU time per frame, and the peak
memory after the first window and after all frames (flat when streaming is bounded). With
`--agreement` it also reports how many code indices agree with fp32 on the same frames, at the run's
precision or at each precision named (on the golden case: the >= 99% bar of the GPU's precision).

    python -m benchmarks speed --device cpu --precision fp32 --frames 4 --window 4
    python -m benchmarks speed --weights golden --precision bf16 --frames 3 --agreement
    python -m benchmarks speed --weights golden --frames 3 --window 3 --agreement tf32 bf16 fp16
    python -m benchmarks speed --device cuda --precision fp16 --frames 100 --flow raft_small

`python -m benchmarks profile` takes the same options that say what runs and profiles one window of it.
Variants measured beside the product's (benchmarks/common.py): `--no_cuda_graphs` (eager), `--compile
[BACKEND]` (the per-frame step through torch.compile), `--group_norm_fp32` (CUDA autocast's own float32
group norm), `--channels_last`.

Weights: `random` (the released configuration, randomly initialised; speed does not depend on the
values), `golden` (the released-layout stand-in weights of ../shared/golden, meaningful codes for
the agreement check; input frames then come from its golden case), or any `keep.load_model` source
(a checkpoint path, a registry name such as `keep`, `preset:tiny`). Flows are given (random smooth
or zero) unless `--flow NAME` asks for estimating them: the estimator's time per frame pair is then
printed beside the network's time per frame (and both are in the total). `--flow gmflow` takes the
checkpoint's own GMFlow (`--weights golden`, a released checkpoint) or, for `--weights random` and
presets, a randomly initialised GMFlow (its speed does not depend on the values).

    python -m benchmarks speed --weights golden --flow gmflow --frames 3 --window 3
"""

from __future__ import annotations

import argparse
import statistics
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from keep.devices import resolve_device
from keep.flow import FLOW_ESTIMATORS, GMFlow, GMFlowNet
from keep.model import load_model
from keep.precision import PRECISIONS, reuse_freed_memory
from keep.restorer import Restorer
from keep.streaming import StreamingRestorer
from keep.threads import set_threads

from .common import (
    add_common_arguments,
    at_least_one,
    device_name,
    group_norm_in_float32,
    load_average,
    load_golden,
    make_restorer,
    parser,
    peak_memory_mib,
    sync,
    to_channels_last,
    write_json,
)


def add_run_arguments(p: argparse.ArgumentParser, *, cuda_graphs: bool = True) -> None:
    """The options that say what runs: shared with `benchmarks profile`, which profiles what this times.
    `cuda_graphs`: the default of CUDA-graph replay (the flag given turns it the other way)."""
    add_common_arguments(p)
    p.add_argument("--precision", default="fp32", choices=list(PRECISIONS))
    p.add_argument("--window", type=int, default=20, help="streaming window (frames per model call)")
    p.add_argument("--batch", type=int, default=1, help="faces restored side by side")
    p.add_argument("--weights", default="random", help="random | golden | a keep.load_model source")
    p.add_argument("--flows", default="random", choices=["random", "zero"], help="given flows")
    p.add_argument(
        "--flow", default=None, choices=("auto", *FLOW_ESTIMATORS), help="estimate flows with this estimator (timed)"
    )
    p.add_argument("--flow_batch", type=int, default=4, help="GMFlow: frame pairs per network call")
    p.add_argument(
        "--channels_last", action="store_true", help="NHWC layout: faster on oneDNN, same codes, output not bit-exact"
    )
    if cuda_graphs:
        p.add_argument(
            "--no_cuda_graphs",
            dest="cuda_graphs",
            action="store_false",
            help="GPU: eager, no replay of each frame's kernels from a CUDA graph (keep.cuda_graphs)",
        )
    else:
        p.add_argument("--cuda_graphs", action="store_true", help="GPU: replay each frame's kernels from a CUDA graph")
    p.add_argument(
        "--compile",
        nargs="?",
        const="inductor",
        default=None,
        metavar="BACKEND",
        help="the per-frame step through torch.compile (default backend inductor; common.CompiledRestorer)",
    )
    p.add_argument(
        "--group_norm_fp32",
        action="store_true",
        help="GPU, bf16 / fp16: group norm in autocast's float32, not in that dtype (keep.archs.blocks.GroupNorm)",
    )
    p.add_argument("--seed", type=int, default=0)


def check_run_arguments(args: argparse.Namespace) -> None:
    at_least_one(args, "window", "batch", "flow_batch")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = parser("speed", __doc__)
    add_run_arguments(p)
    p.add_argument("--frames", type=int, default=20, help="frames restored per repeat")
    p.add_argument("--warmup", action="store_true", help="one untimed window first (allocator, oneDNN)")
    p.add_argument("--repeats", type=int, default=1, help="timed runs; min and median are printed")
    p.add_argument(
        "--no_reuse_memory",
        dest="reuse_memory",
        action="store_false",
        help="CPU: glibc malloc's default, not keeping freed memory (keep.precision.reuse_freed_memory)",
    )
    p.add_argument(
        "--agreement",
        nargs="*",
        default=None,
        choices=list(PRECISIONS),
        metavar="PRECISION",
        help="also the share of code indices equal to fp32's on the same frames: at --precision, or at each "
        "precision named (e.g. --agreement tf32 bf16 fp16)",
    )
    args = p.parse_args(argv)
    at_least_one(args, "frames", "repeats")
    check_run_arguments(args)
    return args


# ------------------------------------------------------------------------------------------- inputs
def smooth_noise(gen: torch.Generator, shape: tuple[int, ...], size: int, cells: int) -> torch.Tensor:
    """Random field `(N, C, size, size)`, smooth at the scale of `size / cells` pixels."""
    coarse = torch.rand(*shape, cells, cells, generator=gen) * 2 - 1
    return F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)


def make_inputs(args, size: int, golden_case: dict | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames `(B, N, 3, S, S)` in [-1, 1] and flows `(B, N, 2, S, S)` (flow t -> t-1; entry 0 is
    only used for windows after the first)."""
    gen = torch.Generator().manual_seed(args.seed)
    n, b = args.frames, args.batch
    if golden_case is not None:  # cycle through the golden frames and flows
        lq = torch.from_numpy(golden_case["lq"])[:1]
        gflows = torch.from_numpy(golden_case["flows"])[:1]
        frames = lq[:, [i % lq.shape[1] for i in range(n)]].expand(b, -1, -1, -1, -1)
        flows = torch.cat([gflows[:, :1], gflows], 1)[:, [i % lq.shape[1] for i in range(n)]]
        return frames.contiguous(), flows.expand(b, -1, -1, -1, -1).contiguous()
    base = smooth_noise(gen, (b, 3), size, 8)
    frames = torch.stack([(base + 0.1 * smooth_noise(gen, (b, 3), size, 32)).clamp(-1, 1) for _ in range(n)], 1)
    if args.flows == "zero":
        flows = torch.zeros(b, n, 2, size, size)
    else:  # a few pixels of smooth motion
        flows = torch.stack([3.0 * smooth_noise(gen, (b, 2), size, 4) for _ in range(n)], 1)
    return frames, flows


def build_model(args, golden_state) -> Restorer:
    """The restorer `args` describe: weights, flow estimator, precision, graphs, compiled step, layout."""
    source = {"random": "preset:released", "golden": golden_state}.get(args.weights, args.weights)
    random_gmflow = args.flow == "gmflow" and isinstance(source, str) and source.startswith("preset:")
    loaded = load_model(source, device=args.device, flow=None if random_gmflow else args.flow)
    flow = loaded.flow
    if random_gmflow:  # a preset carries no GMFlow: random weights (its speed does not depend on them)
        flow = GMFlow(GMFlowNet().state_dict(), device=args.device)
    if isinstance(flow, GMFlow):
        flow.pairs_per_call = args.flow_batch
    if args.channels_last:
        to_channels_last(loaded.network)
    return make_restorer(
        loaded.network, flow, backend=args.compile, precision=args.precision, cuda_graphs=args.cuda_graphs
    )


# ------------------------------------------------------------------------------------------- runs
class CodeRecorder:
    """Stands in for the network inside a `Restorer` and keeps each window's code indices."""

    def __init__(self, network):
        self.network, self.idx = network, []

    def __getattr__(self, name: str):  # parameters, config, step: the network's
        return getattr(self.network, name)

    def run(self, *args, **kwargs):
        result = self.network.run(*args, **kwargs)
        self.idx.append(result.idx.cpu())
        return result


class FlowClock:
    """The streaming restorer's `timer`: seconds and CPU seconds of each flow estimation."""

    def __init__(self):
        self.times: list[tuple[float, float]] = []

    @contextmanager
    def __call__(self, stage: str):
        begin, begin_cpu = time.perf_counter(), time.process_time()
        yield  # the restorer synchronises a GPU before leaving
        if stage == "flow":
            self.times.append((time.perf_counter() - begin, time.process_time() - begin_cpu))


def stream(model, frames, flows, args, device, on_window=None, flow_time: list | None = None) -> None:
    """Restore all frames window by window with the carry-mode StreamingRestorer, one stream per face,
    dropping outputs.

    Flows are given (`flows`), or with `--flow` estimated by the restorer (all pairs of a window in one
    estimator call, in fp32, as the pipeline does); `flow_time` then gets (seconds, CPU seconds, pairs)
    per window."""
    clock = FlowClock()
    restorer = StreamingRestorer(model, window=args.window, timer=clock)
    with torch.inference_mode():
        for start in range(0, frames.shape[1], args.window):
            lq = frames[:, start : start + args.window].to(device)
            given = None
            if args.flow is None:
                first = start if start > 0 else start + 1  # the first window has T-1 flows
                given = dict(enumerate(flows[:, first : start + args.window].to(device)))
            restorer.step(dict(enumerate(lq)), given)
            sync(device)
            pairs = lq.shape[0] * (lq.shape[1] if start > 0 else lq.shape[1] - 1)
            if args.flow is not None and flow_time is not None and pairs:
                flow_time.append((*clock.times[-1], pairs))
            if on_window is not None:
                on_window(start + lq.shape[1])


def codes(model, frames, flows, args, device, precision: str) -> torch.Tensor:
    """Code indices `(B, N, h*w)` of the streamed frames at `precision` (fp32: the exact reference, never
    compiled; the others with the run's `--compile`)."""
    recorder = CodeRecorder(model.network)
    backend = None if precision == "fp32" else args.compile
    restorer = make_restorer(recorder, model.flow, backend=backend, precision=precision, cuda_graphs=args.cuda_graphs)
    stream(restorer, frames, flows, args, device)
    return torch.cat(recorder.idx, 1)


def agreement(model, frames, flows, args, device, timed_codes: torch.Tensor) -> dict:
    """Share of code indices equal to fp32's on the same frames, per precision of `--agreement` (none named:
    `--precision`, whose codes are the timed run's). With `--weights golden` this is the golden case's
    measure (its fp32 codes are the released network's)."""
    wanted = [p for p in (args.agreement or [args.precision]) if p != "fp32"]
    found = {args.precision: timed_codes} if args.compile is None or args.precision != "fp32" else {}
    for precision in ["fp32", *wanted]:
        if precision not in found:
            found[precision] = codes(model, frames, flows, args, device, precision)
    exact = found["fp32"]
    shares = {p: (found[p] == exact).double().mean().item() for p in wanted}
    results = {"code_agreement": shares, "agreement_tokens": exact.numel()}
    if args.precision in shares:
        results["code_agreement_vs_fp32"] = shares[args.precision]
    return results


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    with group_norm_in_float32() if args.group_norm_fp32 else nullcontext():
        return measure(args)


def measure(args: argparse.Namespace) -> dict:
    device = resolve_device(args.device)
    args.device = str(device)
    set_threads(args.threads)
    reused = device.type == "cpu" and args.reuse_memory and reuse_freed_memory()
    golden_state, golden_case = load_golden() if args.weights == "golden" else (None, None)
    model = build_model(args, golden_state)
    frames, flows = make_inputs(args, model.config.img_size, golden_case)

    recorder = CodeRecorder(model.network)  # the timed stream's codes, for the agreement check
    timed = make_restorer(  # keeps its graphs and compiled code from the warm-up on
        recorder, model.flow, backend=args.compile, precision=args.precision, cuda_graphs=args.cuda_graphs
    )
    runs = time_runs(timed, recorder, frames, flows, args, device)
    results = setting(args, device, reused, golden_case is not None) | speed(runs, args)
    if args.flow is not None:
        results |= flow_apart(runs, args) | {"flow_size": model.config.img_size}
    if args.agreement is not None:
        results |= agreement(model, frames, flows, args, device, torch.cat(recorder.idx, 1))
    report(results)
    write_json(args.json, results)
    return results


@dataclass
class Runs:
    """What the timed repeats measured: per repeat the seconds, the CPU seconds and (seconds, CPU seconds,
    pairs) of each window's flow estimation; the peak memory after loading, after each window of the first
    repeat and after all of them."""

    memory_loaded: float
    peak_all: float = 0.0
    seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)
    flow_times: list[list[tuple[float, float, int]]] = field(default_factory=list)
    peaks: list[float] = field(default_factory=list)


def time_runs(timed: Restorer, recorder: CodeRecorder, frames, flows, args, device: torch.device) -> Runs:
    """`--warmup` (untimed), then `--repeats` timed streams of all frames; the recorder keeps the last one's codes."""
    if args.warmup:
        warm = min(args.window, args.frames)
        warm_args = argparse.Namespace(**{**vars(args), "window": warm})
        stream(timed, frames[:, :warm], flows[:, :warm], warm_args, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    runs = Runs(memory_loaded=peak_memory_mib(device))

    def after_window(done: int) -> None:
        runs.peaks.append(peak_memory_mib(device))

    for _ in range(args.repeats):
        recorder.idx.clear()
        runs.flow_times.append([])
        sync(device)
        wall, cpu = time.perf_counter(), time.process_time()
        stream(timed, frames, flows, args, device, on_window=after_window, flow_time=runs.flow_times[-1])
        runs.seconds.append(time.perf_counter() - wall)
        runs.cpu_seconds.append(time.process_time() - cpu)
    runs.peak_all = peak_memory_mib(device)
    return runs


def setting(args: argparse.Namespace, device: torch.device, reused: bool, golden: bool) -> dict:
    """What was run, on what."""
    return {
        "device": str(device),
        "device_name": device_name(device),
        "precision": args.precision,
        "channels_last": args.channels_last,
        "cuda_graphs": args.cuda_graphs and device.type == "cuda",
        "compile": args.compile,
        "group_norm_fp32": args.group_norm_fp32,
        "reuse_freed_memory": reused,
        "threads": torch.get_num_threads(),
        "weights": args.weights if isinstance(args.weights, str) else "state dict",
        "flow": args.flow or f"given ({'golden' if golden else args.flows})",
        "frames": args.frames,
        "batch": args.batch,
        "window": args.window,
        "repeats": args.repeats,
    }


def speed(runs: Runs, args: argparse.Namespace) -> dict:
    """Frames/s, s/frame and CPU s/frame over the repeats, and the peak memory (flows included)."""
    processed = args.frames * args.batch
    best, median = min(runs.seconds), statistics.median(runs.seconds)
    return {
        "s_per_frame_min": best / processed,
        "s_per_frame_median": median / processed,
        "fps_max": processed / best,
        "fps_median": processed / median,
        "cpu_s_per_frame_median": statistics.median(runs.cpu_seconds) / processed,
        "memory_after_load_mib": runs.memory_loaded,
        "peak_memory_first_window_mib": runs.peaks[0],
        "peak_memory_per_window_mib": runs.peaks[: -(-args.frames // args.window)],
        "peak_memory_all_frames_mib": runs.peak_all,
        "peak_memory_growth": runs.peak_all / runs.peaks[0] - 1,
        "load_average": load_average(),
    }


def flow_apart(runs: Runs, args: argparse.Namespace) -> dict:
    """With `--flow`: the estimator's time per frame pair and the network's per frame, apart."""
    processed = args.frames * args.batch
    flow_seconds = [sum(t for t, _, _ in run) for run in runs.flow_times]
    flow_cpu = [sum(c for _, c, _ in run) for run in runs.flow_times]
    pairs = sum(n for _, _, n in runs.flow_times[0])
    network_seconds = [total - flow for total, flow in zip(runs.seconds, flow_seconds, strict=True)]
    network_cpu = [total - flow for total, flow in zip(runs.cpu_seconds, flow_cpu, strict=True)]
    results = {"flow_pairs": pairs}
    if pairs:
        results["flow_s_per_pair_min"] = min(flow_seconds) / pairs
        results["flow_s_per_pair_median"] = statistics.median(flow_seconds) / pairs
        results["flow_pairs_per_s_max"] = pairs / min(flow_seconds)
        results["flow_cpu_s_per_pair_median"] = statistics.median(flow_cpu) / pairs
    results["network_s_per_frame_min"] = min(network_seconds) / processed
    results["network_s_per_frame_median"] = statistics.median(network_seconds) / processed
    results["network_fps_max"] = processed / min(network_seconds)
    results["network_cpu_s_per_frame_median"] = statistics.median(network_cpu) / processed
    return results


def report(r: dict) -> None:
    memory = "CUDA allocated" if r["device"].startswith("cuda") else "process RSS"
    print(
        f"KEEP {r['weights']} weights, {r['device']} ({r['device_name']}), {r['precision']}, "
        f"channels_last={r['channels_last']}, cuda_graphs={r['cuda_graphs']}, "
        f"reuse_freed_memory={r['reuse_freed_memory']}, "
        f"{r['threads']} threads, flows {r['flow']}"
    )
    print(f"{r['frames']} frames x batch {r['batch']}, window {r['window']}, {r['repeats']} repeat(s)")
    print(
        f"frames/s: {r['fps_max']:.3f} (best)  {r['fps_median']:.3f} (median)   "
        f"s/frame: {r['s_per_frame_min']:.2f} (best)  {r['s_per_frame_median']:.2f} (median)   "
        f"CPU s/frame: {r['cpu_s_per_frame_median']:.2f}"
    )
    print(
        f"peak memory ({memory}): {r['peak_memory_first_window_mib']:.0f} MiB after the first window, "
        f"{r['peak_memory_all_frames_mib']:.0f} MiB after all frames ({100 * r['peak_memory_growth']:+.1f}%); "
        f"{r['memory_after_load_mib']:.0f} MiB after loading"
    )
    if r.get("flow_pairs"):
        print(
            f"flow {r['flow']} at {r['flow_size']}: {r['flow_s_per_pair_min']:.3f} s per frame pair (best), "
            f"{r['flow_s_per_pair_median']:.3f} (median), {r['flow_pairs_per_s_max']:.2f} pairs/s, "
            f"CPU {r['flow_cpu_s_per_pair_median']:.3f} s/pair; beside it the network: "
            f"{r['network_s_per_frame_min']:.3f} s/frame (best), {r['network_fps_max']:.3f} frames/s, "
            f"CPU {r['network_cpu_s_per_frame_median']:.3f} s/frame ({r['flow_pairs']} pairs, "
            f"{r['frames'] * r['batch']} frames)"
        )
    for precision, share in r.get("code_agreement", {}).items():
        print(f"code agreement of {precision} with fp32: {100 * share:.2f}% of {r['agreement_tokens']} tokens")
    if r["load_average"]:
        print("load average (1, 5, 15 min): " + ", ".join(f"{x:.2f}" for x in r["load_average"]))
