"""The runtime around the KEEP network: flow estimation, the previous frame, devices, precision, fidelity.

`KEEP` is a function of tensors and always takes its flows. `Restorer` pairs it with a flow
estimator and the settings of a restoration run, so that what `keep.load_model` returns restores a
clip from its frames alone:

    model = keep.load_model("keep", fidelity=0.7)   # a Restorer
    out = model(lq)                                 # flows estimated here, frame t -> t-1
    out = model(lq, flows)                          # or given (precomputed, cached, injected in tests)
    model.network                                   # the bare nn.Module (state dict, training, hooks)

The settings live here and nowhere else: `precision` (the network runs in `keep.precision.autocast`
of it; flows are always estimated in exact float32, `keep.flow.clip_flows`), `fidelity` (the CFT weight
`KEEP.run` takes, CodeFormer's `w`), `cuda_graphs` (on a GPU the frames of a window are replayed from
CUDA graphs, `keep.cuda_graphs`: same kernels, same values). `keep.streaming.StreamingRestorer` and the
pipeline run the network through `Restorer.run`, so they follow them.
"""

from __future__ import annotations

import torch

from .archs.keep_arch import KEEP, KEEPConfig, KEEPOutput, KEEPState
from .config import FIDELITY
from .cuda_graphs import GraphedStep
from .errors import KeepError
from .flow import FlowEstimator, clip_flows
from .precision import autocast, check_precision


def check_fidelity(value: float) -> float:
    """The fidelity (CFT weight, CodeFormer's `w`) as a float in `FIDELITY`; KeepError otherwise."""
    if not FIDELITY.allows(value):
        raise KeepError(f"fidelity (CFT weight) must be {FIDELITY}, got {value!r}")
    return float(value)


class Restorer:
    """A KEEP network, the flow estimator that feeds it (None: flows must always be given) and the
    run's settings (see the module docstring)."""

    def __init__(
        self,
        network: KEEP,
        flow: FlowEstimator | None = None,
        *,
        precision: str = "fp32",
        fidelity: float = 1.0,
        cuda_graphs: bool = True,
    ):
        self.network = network
        self.flow = flow
        self.precision = precision
        self.fidelity = fidelity
        self.cuda_graphs = cuda_graphs  # on a GPU, replay the per-frame recurrence from CUDA graphs
        self._graphed: GraphedStep | None = None

    @property
    def precision(self) -> str:
        """`fp32` (exact), `tf32`, `bf16` or `fp16`: the `keep.precision.autocast` the network runs in."""
        return self._precision

    @precision.setter
    def precision(self, value: str) -> None:
        try:
            check_precision(value)
        except ValueError as exc:  # a user's choice: the one-line error of the entry points
            raise KeepError(str(exc)) from None
        self._precision = value

    @property
    def fidelity(self) -> float:
        """The CFT weight every window is restored with: 0 (quality) .. 1 (fidelity, every release's value)."""
        return self._fidelity

    @fidelity.setter
    def fidelity(self, value: float) -> None:
        self._fidelity = check_fidelity(value)

    def frame_step(self) -> GraphedStep | None:
        """What `KEEP.run` computes its predicted frames with: with `cuda_graphs` on CUDA a `GraphedStep`,
        made once and kept (its captured graphs) while the network stays; else None (`KEEP.step`)."""
        if not (self.cuda_graphs and self.device.type == "cuda"):
            return None
        if self._graphed is None or self._graphed.network is not self.network:
            self._graphed = GraphedStep(self.network)
        return self._graphed

    @property
    def config(self) -> KEEPConfig:
        return self.network.config

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    def to(self, device: str | torch.device) -> Restorer:
        self.network.to(device)
        return self

    def eval(self) -> Restorer:
        self.network.eval()
        return self

    def flows(self, lq: torch.Tensor, previous: torch.Tensor | None = None) -> torch.Tensor | None:
        """Flows frame t -> t-1 of a window (`keep.flow.clip_flows`: all pairs in one estimator call, exact
        float32); None when the window has no pair (one frame, no `previous`)."""
        if lq.shape[1] - (previous is None) < 1:
            return None
        if self.flow is None:
            raise ValueError("no flows given and no flow estimator set (keep.load_model(..., flow='dis'))")
        return clip_flows(self.flow, lq, previous)

    def run(
        self,
        lq: torch.Tensor,
        flows: torch.Tensor | None = None,
        *,
        state: KEEPState | None = None,
        previous: torch.Tensor | None = None,
        **kwargs,
    ) -> KEEPOutput:
        """`KEEP.run` at this restorer's precision and fidelity, with flows estimated when not given;
        `previous` is the LQ frame `(B, 3, H, W)` before this window (needed with a `state` that has a
        previous output). Keyword arguments go on to `KEEP.run`."""
        if flows is None:
            if state is not None and state.prev_out is not None and previous is None:
                raise ValueError("continuing from a state needs the previous LQ frame to estimate the first flow")
            flows = self.flows(lq, previous if state is not None and state.prev_out is not None else None)
        kwargs.setdefault("step", self.frame_step())
        kwargs.setdefault("fidelity", self.fidelity)
        with autocast(lq.device, self.precision):
            return self.network.run(lq, flows, state=state, **kwargs)

    def __call__(self, lq: torch.Tensor, flows: torch.Tensor | None = None) -> torch.Tensor:
        """Restore one clip: lq `(B, T, 3, H, W)` in [-1, 1] -> `(B, T, 3, H, W)` raw output."""
        return self.run(lq, flows).out
