"""CUDA-graph replay of the network's per-frame recurrence (inference on a GPU).

The Kalman recurrence makes every frame wait for the previous output, so a window is T calls of
`KEEP.step` (HQ encoder, transformer, decoder: about a thousand kernels each) at batch = faces, each
kernel launched from Python. `GraphedStep` captures `KEEP.step` into a CUDA graph once per input
signature (batch, shapes, dtypes, autocast and TF32 settings, fidelity) and then replays it: the same
kernels on the same values, with one launch per frame. On an H100 the released network in bf16 at
batch 1 went from 32.6 to 45.0 frames/s (docs/speed.md).

    step = GraphedStep(network)
    network.run(lq, flows, state=state, step=step)   # `keep.restorer.Restorer` does this on CUDA

Frames without a prediction (a clip's first), training (autograd on) and CPU tensors run the step
eagerly. A capture that fails logs one line and that signature runs eagerly from then on. The step
captured is `KEEP.step` or one given in its place that computes the same (a `torch.compile`d step, whose
kernels the graphs then replay: `python -m benchmarks speed --compile`).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass

import torch

from .archs.keep_arch import KEEP, FrameOutput, FrameStep
from .precision import autocast_dtype, tf32_state

log = logging.getLogger(__name__)


@dataclass
class _Captured:
    graph: torch.cuda.CUDAGraph
    inputs: list[torch.Tensor]  # static input buffers: z_obs, prev_out, flow, gain, taps, CFA memory
    output: FrameOutput  # static outputs, overwritten by every replay


class GraphedStep:
    """`KEEP.step` (or `step`, which computes the same) with the frames that have a prediction replayed
    from CUDA graphs.

    capacity: graphs kept (least recently used dropped first). Batch sizes change as faces come and go,
        and under autocast a window's first predicted frame gets a CFA memory of another dtype than the
        rest (so two graphs per batch size). All graphs share one memory pool: they replay one after
        another and every replay's outputs are cloned at once, so one graph's work may reuse another's
        memory, and the pool stays about one frame's activations at the largest batch.
    """

    def __init__(self, network: KEEP, *, step: FrameStep | None = None, capacity: int = 8, warmup: int = 2):
        self.network = network
        self.step = step or network.step
        self.capacity = capacity
        self.warmup = warmup
        self.graphs: OrderedDict[tuple, _Captured] = OrderedDict()
        self.failed: set[tuple] = set()
        self.pool = None  # the shared memory pool, made at the first capture
        self.captures = 0  # graphs captured so far (tests, benchmarks)
        self.replays = 0

    def __call__(
        self,
        z_obs: torch.Tensor,
        taps: dict[int, torch.Tensor],
        cfa_memory: dict[int, torch.Tensor],
        prev_out: torch.Tensor | None = None,
        flow: torch.Tensor | None = None,
        gain: torch.Tensor | None = None,
        *,
        fidelity: float = 1.0,
        straight_through: bool = False,
    ) -> FrameOutput:
        eager = lambda: self.step(  # noqa: E731
            z_obs, taps, cfa_memory, prev_out, flow, gain, fidelity=fidelity, straight_through=straight_through
        )
        if (
            prev_out is None
            or straight_through
            or torch.is_grad_enabled()
            or z_obs.device.type != "cuda"
            or torch.cuda.is_current_stream_capturing()
        ):
            return eager()
        tap_scales, memory_scales = tuple(sorted(taps)), tuple(sorted(cfa_memory))
        inputs = [z_obs, prev_out, flow, gain, *(taps[s] for s in tap_scales), *(cfa_memory[s] for s in memory_scales)]
        key = self._signature(inputs, tap_scales, memory_scales, fidelity)
        captured = self.graphs.get(key)
        if captured is None and key not in self.failed:
            captured = self._capture(key, inputs, tap_scales, memory_scales, fidelity)
        if captured is None:
            return eager()
        self.graphs.move_to_end(key)
        for static, value in zip(captured.inputs, inputs, strict=True):
            static.copy_(value)
        captured.graph.replay()
        self.replays += 1
        out = captured.output  # cloned: the next replay overwrites the static outputs
        return FrameOutput(
            out.out.clone(), out.logits.clone(), out.idx.clone(), out.z_post.clone(),
            {s: f.clone() for s, f in out.fused.items()},
        )  # fmt: skip

    def _signature(self, inputs: list[torch.Tensor], tap_scales: tuple, memory_scales: tuple, fidelity: float) -> tuple:
        return (
            tuple((tuple(x.shape), x.dtype, x.device) for x in inputs),
            tap_scales,
            memory_scales,
            autocast_dtype("cuda"),
            tf32_state(),
            float(fidelity),  # a Python float: baked into the captured kernels
            next(self.network.parameters()).data_ptr(),  # the weights the graph reads (moved: new graph)
        )

    def _capture(
        self, key: tuple, inputs: list[torch.Tensor], tap_scales: tuple, memory_scales: tuple, fidelity: float
    ):
        static = [x.clone() for x in inputs]
        n_taps = len(tap_scales)

        def step() -> FrameOutput:
            z_obs, prev_out, flow, gain = static[:4]
            taps = dict(zip(tap_scales, static[4 : 4 + n_taps], strict=True))
            memory = dict(zip(memory_scales, static[4 + n_taps :], strict=True))
            return self.step(z_obs, taps, memory, prev_out, flow, gain, fidelity=fidelity)

        device = inputs[0].device
        dtype = autocast_dtype("cuda")
        # autocast's cache of cast weights must stay off while capturing: a cached cast made during
        # capture would be freed when the context exits, under the graph's feet. The warm-up runs under
        # the same setting, so that a compiled step meets the same state (no recompilation in capture).
        no_cache = torch.autocast("cuda", dtype=dtype or torch.float16, enabled=dtype is not None, cache_enabled=False)
        try:
            side = torch.cuda.Stream(device)  # warm-up off the default stream, as capture requires
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side), no_cache:
                for _ in range(self.warmup):
                    step()
            torch.cuda.current_stream(device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with no_cache:
                if self.pool is None:
                    self.pool = torch.cuda.graph_pool_handle()
                with torch.cuda.graph(graph, pool=self.pool):
                    output = step()
        except (RuntimeError, torch.cuda.OutOfMemoryError) as exc:
            self.failed.add(key)
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            log.warning("CUDA graph capture failed (%s); this batch size runs without graphs", message)
            return None
        if len(self.graphs) >= self.capacity:
            self.graphs.popitem(last=False)
        self.graphs[key] = captured = _Captured(graph, static, output)
        self.captures += 1
        return captured

    def clear(self) -> None:
        """Drop every captured graph (frees their memory)."""
        self.graphs.clear()
        self.failed.clear()
        self.pool = None


__all__ = ["GraphedStep"]
